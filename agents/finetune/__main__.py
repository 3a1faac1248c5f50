"""``python -m agents.finetune``: run one fine-tuning worker (settings from ``LLMTUNE_FINETUNE__*`` and
``LLMTUNE_DB__URL``: the same database as the control plane)."""

from __future__ import annotations

import logging

from agents.finetune.worker import make_worker
from controlplane.db.engine import make_engine, migrate
from controlplane.settings import Settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if not settings.finetune.redis_url:
        raise SystemExit("set LLMTUNE_FINETUNE__REDIS_URL: the worker takes its jobs from that Redis")
    engine = make_engine(settings.db.url)
    migrate(engine)  # the worker may start before the control plane has created the tables
    worker = make_worker(settings.finetune, engine)
    logging.getLogger(__name__).warning(
        "fine-tuning worker %s on queue %s (%s)", worker.ctx["runner"].name, settings.finetune.queue, settings.finetune.redis_url
    )
    worker.run()


if __name__ == "__main__":
    main()
