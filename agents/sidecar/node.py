"""The agent's view of its Ollama server, through the official ``ollama`` client.

Every call is translated into two errors: ``OllamaUnavailable`` (nothing answered, or it timed
out: retry) and ``OllamaFailed`` (Ollama answered with an error; ``permanent`` when retrying the
same request cannot help, such as a model that does not exist in the registry).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import ollama

from agents.sidecar.artifacts import ArtifactError, ArtifactFetcher
from agents.sidecar.desired import Derived, tag


class OllamaUnavailable(Exception):
    """Ollama did not answer."""


class OllamaFailed(Exception):
    """Ollama answered with an error."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    @property
    def permanent(self) -> bool:
        text = str(self).lower()
        return self.status in (400, 404) or "does not exist" in text or "not found" in text


class AdapterUnavailable(OllamaFailed):
    """An adapter's files could not be had: not on the node, or not fetched from the control plane
    (``status`` 0 when it did not answer, or the bytes did not match: worth another try)."""

    @property
    def permanent(self) -> bool:
        return self.status in (400, 401, 403, 404)


@dataclass(frozen=True, slots=True)
class Loaded:
    name: str
    size: int
    size_vram: int
    expires_at: datetime | None
    context_length: int | None
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Observed:
    version: str
    present: Mapping[str, str]  # tag → digest
    loaded: Mapping[str, Loaded]
    sizes: Mapping[str, int] = field(default_factory=dict)  # tag → bytes on disk


def _hex(digest: str | None) -> str:
    """A digest as /api/tags and /api/ps give it, without the ``sha256:`` some versions add."""
    return (digest or "").removeprefix("sha256:")


class OllamaNode:
    """Typed operations on one Ollama server; counts calls per operation (for /metrics and tests)."""

    def __init__(
        self, url: str, *, artifacts: ArtifactFetcher | None = None, timeout_s: float = 600.0, connect_timeout_s: float = 2.0
    ) -> None:
        self.url = url
        timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.client = ollama.AsyncClient(host=url, timeout=timeout)
        self._quick = ollama.AsyncClient(host=url, timeout=httpx.Timeout(5.0, connect=connect_timeout_s))
        self.artifacts = artifacts
        self.calls: dict[tuple[str, str], int] = {}
        self.version = ""
        self.last_load_ms: float | None = None  # Ollama's load_duration of the last warm-up
        self.probe_ms: float | None = None  # round trip of the last observation

    def _count(self, op: str, result: str) -> None:
        self.calls[(op, result)] = self.calls.get((op, result), 0) + 1

    async def _call(self, op: str, fn: Callable[[], Any]) -> Any:
        try:
            result = await fn()
        except ollama.ResponseError as exc:
            self._count(op, "error")
            raise OllamaFailed(f"{op}: {exc.error}", exc.status_code) from exc
        except (ConnectionError, httpx.TransportError) as exc:
            self._count(op, "unreachable")
            raise OllamaUnavailable(f"Ollama at {self.url} did not answer ({op}): {exc or type(exc).__name__}") from exc
        self._count(op, "ok")
        return result

    async def observe(self, *, version: bool = True) -> Observed:
        """Models on disk (``/api/tags``), loaded runners (``/api/ps``) and, if asked, the version."""
        if version:
            answer = await self._call("version", lambda: self._quick._request_raw("GET", "/api/version"))  # type: ignore[no-untyped-call]
            self.version = str(answer.json().get("version", ""))
        started = time.perf_counter()
        tags = await self._call("tags", self._quick.list)
        ps = await self._call("ps", self._quick.ps)
        self.probe_ms = round((time.perf_counter() - started) * 500, 3)  # two round trips: per request
        present = {tag(m.model): _hex(m.digest) for m in tags.models if m.model}
        loaded = {
            tag(m.model): Loaded(
                tag(m.model), int(m.size or 0), int(m.size_vram or 0), m.expires_at, m.context_length, _hex(m.digest)
            )
            for m in ps.models
            if m.model
        }
        return Observed(self.version, present, loaded, {tag(m.model): int(m.size or 0) for m in tags.models if m.model})

    async def pull(self, name: str, progress: Callable[[float], None]) -> None:
        async def run() -> None:
            async for part in await self.client.pull(name, stream=True):
                if part.total:
                    progress(min(1.0, (part.completed or 0) / part.total))

        await self._call("pull", run)

    async def show(self, name: str) -> ollama.ShowResponse:
        result: ollama.ShowResponse = await self._call("show", lambda: self.client.show(name))
        return result

    async def create(self, name: str, derived: Derived) -> None:
        adapters: dict[str, str] = {}
        for adapter in derived.adapters:
            if isinstance(adapter, str):
                try:
                    files = adapter_files(Path(adapter))
                except OSError as exc:  # the adapter is not on this node: the model fails with the reason
                    raise AdapterUnavailable(f"adapter: {exc}", 400) from exc
                for file in files:
                    adapters[file.name] = await self._call("blob", lambda f=file: self.client.create_blob(f))  # type: ignore[misc]
            else:
                for file_name, digest in adapter:
                    await self._blob_from_control_plane(file_name, digest)
                    adapters[file_name] = digest
        await self._call(
            "create",
            lambda: self.client.create(
                model=name,
                from_=derived.source,
                system=derived.system,
                template=derived.template,
                parameters=dict(derived.parameters) or None,
                adapters=adapters or None,
                messages=[{"role": role, "content": content} for role, content in derived.messages] or None,
            ),
        )

    async def load(self, name: str, options: Mapping[str, Any], keep_alive: str | int, *, embedding: bool = False) -> None:
        """Warm ``name`` up: an empty generate (an embed for embedding models) loads the runner."""
        opts = dict(options) or None
        if embedding:
            answer = await self._call(
                "load", lambda: self.client.embed(model=name, input="", options=opts, keep_alive=keep_alive)
            )
        else:
            answer = await self._call(
                "load", lambda: self.client.generate(model=name, prompt="", options=opts, keep_alive=keep_alive)
            )
        if answer.load_duration:
            self.last_load_ms = answer.load_duration / 1e6

    async def unload(self, name: str) -> None:
        await self._call("unload", lambda: self.client.generate(model=name, prompt="", keep_alive=0))

    async def delete(self, name: str) -> None:
        await self._call("delete", lambda: self.client.delete(name))

    async def has_blob(self, digest: str) -> bool:
        """Whether Ollama holds the blob already (``HEAD /api/blobs/{digest}``)."""

        async def head() -> bool:
            async with httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(5.0)) as http:
                return (await http.head(f"/api/blobs/{digest}")).status_code == 200

        result: bool = await self._call("blob_exists", head)
        return result

    async def _blob_from_control_plane(self, file_name: str, digest: str) -> None:
        """Upload an adapter file the control plane keeps to Ollama, unless Ollama has it already."""
        if await self.has_blob(digest):
            return
        if self.artifacts is None:
            raise AdapterUnavailable(f"adapter file {file_name} ({digest}) is kept by the control plane; this agent has no "
                                     "LLMTUNE_AGENT__CONTROL_PLANE_URL to fetch it from", 400)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="llmtune-adapter-") as tmp:
            path = Path(tmp) / file_name
            try:
                await self.artifacts.fetch(digest, path)
            except ArtifactError as exc:
                raise AdapterUnavailable(f"adapter file {file_name}: {exc}", exc.status) from exc
            await self._call("blob", lambda: self.client.create_blob(path))


def adapter_files(path: Path) -> list[Path]:
    """The files Ollama needs for an adapter: a GGUF file as is; for peft's safetensors output (a
    folder, or its ``adapter_model.safetensors``) the weights and ``adapter_config.json``, which
    Ollama's converter reads for the rank and alpha."""
    folder = path if path.is_dir() else path.parent
    if not path.is_dir() and path.suffix != ".safetensors":
        return [path]
    weights = sorted(folder.glob("*.safetensors")) if path.is_dir() else [path]
    config = folder / "adapter_config.json"
    if not weights:
        raise FileNotFoundError(f"adapter folder {folder} holds no .safetensors file")
    if not config.is_file():
        raise FileNotFoundError(f"adapter {path} has no adapter_config.json beside it (peft's save_pretrained writes one)")
    return [*weights, config]


def parse_parameters(text: str | None) -> dict[str, list[str]]:
    """``/api/show`` parameters (``name value`` lines, strings quoted) as name → values."""
    out: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        name, _, value = line.strip().partition(" ")
        if name:
            out.setdefault(name, []).append(value.strip().strip('"'))
    return out


def modelfile_system(modelfile: str | None) -> str | None:
    """The SYSTEM prompt of a Modelfile (``ShowResponse`` has no field for it)."""
    text = modelfile or ""
    start = text.find('SYSTEM """')
    if start < 0:
        return None
    start += len('SYSTEM """')
    end = text.find('"""', start)
    return text[start:end] if end >= 0 else None


def matches(show: ollama.ShowResponse, derived: Derived) -> bool:
    """True when the model Ollama holds was created from ``derived`` (parameters, system, template).

    Parameters are compared for the names we set only: a derived model also shows those it
    inherits from its base (stop tokens and the like).
    """
    want: dict[str, list[str]] = {}
    for name, value in derived.parameters:
        values = value if isinstance(value, list) else [value]
        want[name] = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    have = parse_parameters(show.parameters)
    if any(have.get(name) != values for name, values in want.items()):
        return False
    if (modelfile_system(show.modelfile) or None) != (derived.system or None):
        return False
    if any(f"MESSAGE {role} {content}\n" not in (show.modelfile or "") for role, content in derived.messages):
        return False
    return derived.template is None or show.template == derived.template
