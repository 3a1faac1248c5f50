"""Runs Ollama as the agent's child process, so that start-time settings (OLLAMA_*) can change:
stop it, start it again with the new environment, and wait until it answers."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence

from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_fixed

from agents.children import dying_with_parent
from agents.sidecar.node import OllamaFailed, OllamaNode, OllamaUnavailable

log = logging.getLogger(__name__)


class OllamaExited(OllamaUnavailable):
    """The supervised Ollama process ended while starting (waiting longer cannot help)."""


def _starting(exc: BaseException) -> bool:
    return isinstance(exc, OllamaUnavailable | OllamaFailed) and not isinstance(exc, OllamaExited)


#: What Ollama may inherit of the agent's environment: the system's basics, proxies for pulls, and
#: what GPU runtimes read. Nothing else: the agent's own settings hold the store password and the
#: control plane's token (LLMTUNE_*), which Ollama must never see.
_INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR",
              "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
              "OLLAMA_HOST", "OLLAMA_MODELS")  # fmt: skip
_INHERITED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "HIP_", "ROCR_", "HSA_", "GPU_DEVICE_ORDINAL")


def ollama_environment(inherited: Mapping[str, str], settings: Mapping[str, str]) -> dict[str, str]:
    """The environment Ollama starts with: the allowed part of ``inherited``, then ``settings``
    (the OLLAMA_* start-time settings the configuration gives)."""
    env = {k: v for k, v in inherited.items() if k in _INHERITED or k.startswith(_INHERITED_PREFIXES)}
    env.update(settings)
    return env


class OllamaProcess:
    def __init__(self, command: Sequence[str], node: OllamaNode, *, start_timeout_s: float = 60.0) -> None:
        self._command = list(command)
        self._node = node
        self._start_timeout_s = start_timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        self.environment: dict[str, str] = {}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, environment: Mapping[str, str]) -> None:
        """Start Ollama with ``environment`` (OLLAMA_* settings) and wait until it answers."""
        env = ollama_environment(os.environ, environment)
        # dies with the agent: an agent killed outright (OOM, SIGKILL) leaves no Ollama holding the node's memory
        self._proc = await asyncio.create_subprocess_exec(*dying_with_parent(self._command), env=env, start_new_session=True)
        self.environment = dict(environment)
        log.info("started Ollama (pid %d) with %s", self._proc.pid, environment or "defaults")
        await self._ready()

    async def _ready(self) -> None:
        """Poll Ollama until it answers; fail if it exits or stays silent past the start timeout."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_starting),
            stop=stop_after_delay(self._start_timeout_s),
            wait=wait_fixed(0.1),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if self._proc is None or self._proc.returncode is not None:
                    code = self._proc.returncode if self._proc else None
                    raise OllamaExited(f"Ollama exited with status {code} while starting; see the agent's log")
                await self._node.observe()

    async def stop(self, *, grace_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(grace_s):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
