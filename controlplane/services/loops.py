"""Daemon loops of the control plane: run a function that ends, forever, at an interval; and the
same under leader election, for the loops one replica of the control plane runs for all of them.

The work sits in the function (testable on its own, with its own clock); the loop only repeats it,
campaigns and reconnects, and logs an exception per run instead of dying (DESIGN.md, style 3 and 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from controlplane.store.errors import LeadershipLost, StoreError
from controlplane.store.leases import Election

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


async def lead(
    election: Election, tick: Callable[[Election], Awaitable[object]], *, name: str, every_s: float,
    wait: Callable[[float], Awaitable[object]] | None = None, check_s: float = 5.0, retry_s: float | None = None,
    clock: Callable[[], float] = time.monotonic, iterations: int | None = None,
) -> None:  # fmt: skip
    """Campaign, then ``tick(election)`` every ``every_s`` while this replica leads; the tick writes
    with ``election.commit`` or ``election.fence()``, so a replica that lost the lead (or could not
    renew its lease in time) writes nothing. ``wait(every_s)`` may return sooner (a message that work
    is due). Leadership is read again every ``check_s``; once lost, the loop campaigns again. A failed
    tick is logged and tried again after ``retry_s`` (default ``every_s``). On cancel the replica resigns, so another leads
    at once. ``iterations``: ticks to run (tests); forever otherwise."""
    pause = wait or asyncio.sleep
    retry = every_s if retry_s is None else retry_s
    keeper: asyncio.Task[None] | None = None
    done, led = 0, False
    try:
        while iterations is None or done < iterations:
            try:
                if led:
                    log.info("%s: %s campaigns for the lead again", name, election.candidate)
                await election.campaign()
                led = True
                keeper = keeper or asyncio.create_task(election.keeper.run())
                log.info("%s: leading as %s", name, election.candidate)
                checked = clock()
                while iterations is None or done < iterations:
                    await tick(election)
                    done += 1
                    if iterations is not None and done >= iterations:
                        break
                    await pause(every_s)
                    if clock() - checked > check_s:
                        checked = clock()
                        if not await election.is_leader():
                            raise LeadershipLost(f"{election.candidate} no longer holds the lead")
            except LeadershipLost as exc:
                log.warning("%s: %s; campaigning again", name, exc)
            except StoreError as exc:
                done += 1
                log.warning("%s: %s; trying again in %g s", name, exc, retry)
                await asyncio.sleep(retry)
            except Exception:
                done += 1
                log.exception("%s failed; trying again in %g s", name, retry)
                await asyncio.sleep(retry)
    finally:
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        with contextlib.suppress(Exception):
            await election.resign()
