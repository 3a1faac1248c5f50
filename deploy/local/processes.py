"""How the project stops the processes it starts (the local stack, test fixtures, benchmarks):
SIGTERM to all of them at once, a bounded wait, then SIGKILL for whatever is left; a process that
cannot be signalled or reaped never stops the others from being stopped. Children started for a
test or a benchmark also die with their parent (Linux's parent-death signal), so a run that is
killed or crashes leaves nothing behind.

Standard library only: ``deploy/local/stack.py`` imports it before any dependency is installed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from typing import Any

#: How long a process gets between SIGTERM and SIGKILL unless a caller says otherwise.
GRACE_S = 10.0


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` for a child that must not outlive the thread that starts it (start such
    children from the main thread: a worker thread that ends would take them with it)."""
    # Imported here: stack.py loads this file before the project's packages are importable (it
    # calls only stop); the launcher is the agent's too, for the Ollama it supervises.
    from agents.children import dying_with_parent

    return subprocess.Popen(dying_with_parent(cmd), **kwargs)


def _signal(proc: subprocess.Popen[Any], sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def stop(procs: Iterable[subprocess.Popen[Any] | None], *, grace_s: float = GRACE_S, group: bool = False) -> list[int]:
    """Stop every process in ``procs`` within about ``grace_s`` (``group``: their process groups,
    for children started in a session of their own). Never raises; returns the pids that needed
    SIGKILL."""
    running = [p for p in procs if p is not None and p.poll() is None]
    for proc in running:
        _signal(proc, signal.SIGTERM, group)
    deadline = time.monotonic() + grace_s
    for proc in running:
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            proc.wait(max(0.0, deadline - time.monotonic()))
    killed = [p for p in running if p.poll() is None]
    for proc in killed:
        _signal(proc, signal.SIGKILL, group)
    for proc in killed:
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            proc.wait(5)
    return [p.pid for p in killed]
