"""Daemon loops of the control plane: run a function that ends, forever, at an interval.

The work sits in the function (testable on its own); the loop only repeats it and logs an
exception per run instead of dying (DESIGN.md, style 3 and 4).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def every(interval_s: float, work: Callable[[], Awaitable[object]], *, name: str, iterations: int | None = None) -> None:
    """Await ``work()`` now and then every ``interval_s`` seconds (``iterations`` times in tests)."""
    done = 0
    while iterations is None or done < iterations:
        try:
            await work()
        except Exception:
            log.exception("%s failed; trying again in %.0f s", name, interval_s)
        done += 1
        if iterations is None or done < iterations:
            await asyncio.sleep(interval_s)
