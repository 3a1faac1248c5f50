"""Where llmctl finds the server and token (and the router and its API key: LLMCTL_ROUTER_URL /
LLMCTL_ROUTER_KEY): flags, then LLMCTL_URL / LLMCTL_TOKEN, then the config
file (``~/.config/llmctl/config.yaml``, written by ``make llm-tuning-up`` like kind writes a kubeconfig)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_URL = "http://127.0.0.1:8700"
DEFAULT_ROUTER_URL = "http://127.0.0.1:8701"


def config_path() -> Path:
    if os.environ.get("LLMCTL_CONFIG"):
        return Path(os.environ["LLMCTL_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "llmctl" / "config.yaml"


@dataclass(frozen=True, slots=True)
class Context:
    url: str
    token: str | None
    router_url: str = DEFAULT_ROUTER_URL
    router_key: str | None = None  # an API key for the router (llmctl route)


def load_file(path: Path | None = None) -> dict[str, str]:
    path = path or config_path()
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    current = data.get("current-context", "default")
    for ctx in data.get("contexts", []):
        if ctx.get("name") == current:
            return {k: str(v) for k, v in ctx.items() if v is not None}
    return {}


def save_file(
    url: str, token: str | None, *, router_url: str | None = None, name: str = "default", path: Path | None = None,
    router_key: str | None = None,
) -> Path:
    """Write (or replace) one context and make it current; the file is private to the user."""
    path = path or config_path()
    data = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    contexts = [c for c in data.get("contexts", []) if c.get("name") != name]
    contexts.append({"name": name, "url": url, "token": token, "router": router_url, "router-key": router_key})
    data.update({"current-context": name, "contexts": contexts})
    path.parent.mkdir(parents=True, exist_ok=True)
    # created 0600, never readable by others even for a moment (it holds tokens)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(data, sort_keys=False))
    return path


def resolve(url: str | None, token: str | None, router_url: str | None = None) -> Context:
    stored = load_file()
    router = router_url or os.environ.get("LLMCTL_ROUTER_URL") or stored.get("router") or DEFAULT_ROUTER_URL
    return Context(
        url=(url or os.environ.get("LLMCTL_URL") or stored.get("url") or DEFAULT_URL).rstrip("/"),
        token=token or os.environ.get("LLMCTL_TOKEN") or stored.get("token"),
        router_url=router.rstrip("/"),
        router_key=os.environ.get("LLMCTL_ROUTER_KEY") or stored.get("router-key"),
    )
