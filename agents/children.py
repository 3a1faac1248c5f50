"""Child processes that die with the thread that started them (Linux's parent-death signal): an
agent killed outright leaves no Ollama holding the node's memory, a test run or benchmark killed
leaves nothing behind.

The signal is set by a tiny launcher that then execs the command, never by a ``preexec_fn``: with
a ``preexec_fn`` Python forks without exec and runs every at-fork handler in the child, and gRPC's
(the etcd client's) restarts its threads there, after which the child waits on a lock forever
(seen: a test run stuck in ``Popen._execute_child``). Without one Python uses vfork and exec, and
no handler runs. Standard library only."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

_LAUNCH = (
    "import ctypes, os, signal, sys\n"
    "try: ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"  # PR_SET_PDEATHSIG
    "except (OSError, AttributeError): pass\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(125)\n"  # the parent died before the signal was set
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def dying_with_parent(cmd: Sequence[str]) -> list[str]:
    """``cmd`` behind the launcher, for ``subprocess.Popen`` or ``asyncio.create_subprocess_exec``
    (the process keeps its pid: the launcher execs the command in place)."""
    return [sys.executable, "-I", "-S", "-c", _LAUNCH, str(os.getpid()), *cmd]
