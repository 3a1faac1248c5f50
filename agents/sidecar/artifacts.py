"""Files the control plane keeps (``GET /api/v1/artifacts/{digest}``), fetched by the agent for
the adapters a fine-tuning job made: streamed to a file and checked against their digest, so no
storage need be shared between the worker that trained an adapter and the nodes that serve it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import httpx


class ArtifactError(Exception):
    """An artifact could not be fetched; ``status`` is the control plane's answer (0: none)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ArtifactFetcher:
    def __init__(self, base_url: str, token: str | None, *, timeout_s: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=5.0))
        self.fetched = 0  # files fetched (for tests and /metrics)

    async def fetch(self, digest: str, dest: Path) -> None:
        """Write the artifact ``digest`` to ``dest``; the file is there only if its digest matched."""
        algorithm, _, want = digest.partition(":")
        if algorithm != "sha256" or not want:
            raise ArtifactError(f"artifact {digest}: not a sha256 digest", 400)
        part = dest.with_name(dest.name + ".part")
        hasher = hashlib.sha256()
        url = f"{self.base_url}/api/v1/artifacts/{digest}"
        try:
            async with self._client.stream("GET", f"/api/v1/artifacts/{digest}") as resp:
                if resp.status_code != 200:
                    detail = (await resp.aread()).decode(errors="replace")[:300]
                    hint = " (set LLMTUNE_AGENT__CONTROL_PLANE_TOKEN to a viewer token)" if resp.status_code in (401, 403) else ""
                    raise ArtifactError(f"GET {url} answered {resp.status_code}: {detail}{hint}", resp.status_code)
                async with await anyio.open_file(part, "wb") as out:  # writes off the event loop
                    async for chunk in resp.aiter_bytes(1 << 20):
                        hasher.update(chunk)
                        await out.write(chunk)
        except httpx.TransportError as exc:
            part.unlink(missing_ok=True)
            raise ArtifactError(f"the control plane at {self.base_url} did not answer for {digest}: {exc!r}", 0) from exc
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        if hasher.hexdigest() != want:
            part.unlink(missing_ok=True)
            raise ArtifactError(f"artifact {digest}: the bytes received hash to sha256:{hasher.hexdigest()}", 0)
        part.replace(dest)
        self.fetched += 1

    async def close(self) -> None:
        await self._client.aclose()
