"""Alembic environment: runs on the connection handed in by ``controlplane.db.engine.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from controlplane.db.models import Base

config = context.config
target_metadata = Base.metadata

connection = config.attributes.get("connection")
if connection is None:  # the alembic CLI: take the URL from alembic's own options
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///.data/llmtune.db")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
