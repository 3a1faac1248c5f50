"""``python -m controlplane.api``: serve the control plane with uvicorn on the configured address."""

from __future__ import annotations

import logging

import uvicorn

from controlplane.api.app import create_app
from controlplane.settings import Settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.api.host, port=settings.api.port, log_level="info")


if __name__ == "__main__":
    main()
