"""``python -m router``: serve the router (settings from ``LLMTUNE_ROUTER__*`` / ``LLMTUNE_STORE__*``)
on uvloop until SIGTERM or SIGINT, then finish the requests in flight and stop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import signal

import uvloop

from router.app import RouterApp
from router.http import Limits
from router.settings import RouterSettings

log = logging.getLogger("router")


async def serve(settings: RouterSettings) -> None:
    group = settings.router
    limits = Limits(max_body=group.max_body_bytes, max_buffered_bytes=max(group.max_buffered_bytes, group.max_body_bytes),
                    max_connections=group.max_connections)  # fmt: skip
    try:
        app = RouterApp(settings.store, limits=limits, outcomes_redis_url=group.outcomes_redis_url,
                         judge_sample=group.judge_sample, max_answer_bytes=group.max_answer_bytes,
                         outcomes_max_age_s=group.outcomes_max_age_s, name=group.name, auth=group.auth,
                         pepper=settings.keys.pepper_bytes(), limits_redis_url=group.limits_redis_url,
                         limits_on_redis_down=group.limits_on_redis_down, otlp_endpoint=group.otlp_endpoint)  # fmt: skip
    except (ValueError, OSError) as exc:  # no pepper where keys are on, or one that cannot be read
        raise SystemExit(f"router: {exc}") from None
    port = await app.start(settings.router.host, settings.router.port)
    log.info("router listening on http://%s:%d (API keys: %s)", settings.router.host, port, group.auth)
    gc.freeze()  # start-up objects live as long as the process: collections need not walk them
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        try:  # answers in flight get the grace period; flushing outcomes and closing the store a few seconds more
            async with asyncio.timeout(group.shutdown_grace_s + 5):
                await app.close(grace_s=group.shutdown_grace_s)
        except TimeoutError:
            log.warning("stopping took over %.0f s: exiting anyway", group.shutdown_grace_s + 5)


def _return_large_buffers_to_the_system() -> None:
    """Request bodies come in pieces of tens of KB that live for milliseconds. glibc raises its mmap
    threshold after the first large free, and from then on such pieces come from the heap, which
    keeps what they leave behind: 500 clients each 200 KB into a body moved RSS by the budget plus
    ~8 MB. A fixed 64 KiB threshold gives them back as soon as they are freed (+0.3 MB)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL(None).mallopt(-3, 64 << 10)  # M_MMAP_THRESHOLD


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _return_large_buffers_to_the_system()
    uvloop.run(serve(RouterSettings()))


if __name__ == "__main__":
    main()
