"""The ``llmtune`` console script: one entry point for every process of the product (the container
image's ENTRYPOINT), and ``llmtune healthcheck`` (the image's HEALTHCHECK).

Each process is named, not imported, here: the router, the agents and the control plane stay
independent packages, and a container imports only the one it runs (and, for the health check,
the settings model that holds its port's default). Every process reads its
settings from ``LLMTUNE_*`` variables (pydantic-settings), never from its command line, where
``ps`` would show secrets.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    module: str  # has a main() that runs the process until SIGTERM
    summary: str
    # where its /healthz is configured: the settings group (LLMTUNE_<GROUP>__HOST/__PORT) and the model that
    # holds its defaults, "module:Class" (None: no HTTP endpoint)
    health: tuple[str, str] | None
    health_path: str = "/healthz"


PROCESSES: dict[str, Process] = {
    "controlplane": Process("controlplane.api.__main__", "the control plane: REST API, write path, loops",
                            ("api", "controlplane.settings:ApiSettings"), "/readyz"),
    "router": Process("router.__main__", "the data-plane router (Ollama, OpenAI and native APIs)",
                      ("router", "router.settings:RouterGroup"), "/readyz"),
    "agent": Process("agents.sidecar.__main__", "the sidecar agent of one Ollama node",
                     ("agent", "agents.sidecar.settings:AgentGroup")),
    "finetune-worker": Process("agents.finetune.__main__", "a fine-tuning worker (jobs from the Redis queue)", None),
    "monitor": Process("controlplane.api.monitor_process", "the performance monitor alone (elected)",
                       ("monitor", "controlplane.settings:MonitorSettings")),
}  # fmt: skip
#: Where a process started by this script says which it is, for ``llmtune healthcheck``.
STATE_FILE = Path(os.environ.get("LLMTUNE_STATE_FILE", "/tmp/llmtune-process.json"))


def health_url(process: Process, environ: dict[str, str]) -> str | None:
    """The URL that tells whether ``process`` is healthy, from the same variables it reads."""
    if process.health is None:
        return None
    group, where = process.health
    module, name = where.split(":")
    defaults = getattr(importlib.import_module(module), name).model_fields  # the process's own defaults
    port = environ.get(f"LLMTUNE_{group.upper()}__PORT") or str(defaults["port"].default)
    host = environ.get(f"LLMTUNE_{group.upper()}__HOST") or defaults["host"].default
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # a wildcard bind answers on loopback
    return f"http://{host}:{port}{process.health_path}"


def healthcheck(timeout_s: float = 3.0) -> int:
    """0 when the process this container runs answers its health endpoint (or, with none, is alive)."""
    try:
        state = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        print(f"unhealthy: no process recorded in {STATE_FILE}", file=sys.stderr)
        return 1
    url = state.get("url")
    if not url:
        alive = Path(f"/proc/{int(state.get('pid', 0))}").exists()
        print(f"{state.get('process')}: {'alive' if alive else 'gone'}")
        return 0 if alive else 1
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            print(f"{state.get('process')}: {answer.status} from {url}")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{state.get('process')}: {exc.code} from {url}", file=sys.stderr)
    except OSError as exc:
        print(f"{state.get('process')}: {url} unreachable ({exc})", file=sys.stderr)
    return 1


def _record(name: str, process: Process) -> None:
    """Say which process this container runs; a read-only or missing /tmp only costs the HEALTHCHECK."""
    state = {"process": name, "pid": os.getpid(), "url": health_url(process, dict(os.environ))}
    try:
        STATE_FILE.write_text(json.dumps(state))
    except OSError as exc:
        print(f"llmtune: could not write {STATE_FILE} ({exc}); 'llmtune healthcheck' will fail", file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmtune",
        description="Run one process of the LLM Tuning Service. Settings come from LLMTUNE_* environment variables.",
    )
    sub = p.add_subparsers(dest="process", required=True, metavar="PROCESS")
    for name, process in PROCESSES.items():
        sub.add_parser(name, help=process.summary)
    sub.add_parser("healthcheck", help="exit 0 when the process this container runs is healthy (the image's HEALTHCHECK)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.process == "healthcheck":
        raise SystemExit(healthcheck())
    process = PROCESSES[args.process]
    _record(args.process, process)
    importlib.import_module(process.module).main()
