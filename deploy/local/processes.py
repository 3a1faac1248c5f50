"""How the project stops the processes it starts (the local stack, test fixtures, benchmarks):
SIGTERM to all of them at once, a bounded wait, then SIGKILL for whatever is left; a process that
cannot be signalled or reaped never stops the others from being stopped. Children started for a
test or a benchmark also die with their parent (Linux's parent-death signal), so a run that is
killed or crashes leaves nothing behind.

Standard library only: ``deploy/local/stack.py`` imports it before any dependency is installed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from typing import Any

#: How long a process gets between SIGTERM and SIGKILL unless a caller says otherwise.
GRACE_S = 10.0
_PR_SET_PDEATHSIG = 1


def _find_prctl() -> Any:
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl
    return None


# Looked up here, in the parent: a preexec_fn runs between fork and exec, where loading a library
# (dlopen takes the loader's lock, which another thread of a busy parent may hold at fork) can hang
# the child forever: seen as a test run stuck in Popen._execute_child.
_PRCTL = _find_prctl()


def die_with_parent() -> None:
    """A ``preexec_fn``: the child gets SIGKILL when the thread that started it ends. Start such
    children from the main thread (a worker thread that ends would take them with it)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` for a child that must not outlive this process."""
    return subprocess.Popen(cmd, preexec_fn=die_with_parent, **kwargs)


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
