"""``python -m router``: serve the router with uvicorn (settings from ``LLMTUNE_ROUTER__*`` / ``LLMTUNE_STORE__*``)."""

from __future__ import annotations

import gc
import logging

import uvicorn

from router.app import create_app
from router.settings import RouterSettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = RouterSettings()
    app = create_app(settings.store)
    gc.freeze()  # start-up objects live as long as the process: collections need not walk them
    uvicorn.run(app, host=settings.router.host, port=settings.router.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
