"""Engine creation and migrations to head (Alembic), for SQLite files and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).with_name("migrations")


def private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 if it does not exist: a SQLite database holds token hashes
    and the audit log, and SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def make_engine(url: str) -> Engine:
    """An engine for ``url``; creates a SQLite file (0600) and its folder."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            private_file(Path(parsed.database))
        engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets readers run beside the single writer; with it, synchronous=NORMAL is durable
            # across process crashes and skips an fsync per commit. The busy timeout rides out locks.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")

        return engine
    return create_engine(url, pool_pre_ping=True)


#: The PostgreSQL advisory lock that migrations hold: replicas starting together on one database
#: migrate one after another (the second finds the schema at head), not both at once.
MIGRATION_LOCK = 0x6C6C6D74756E65  # "llmtune"


def migrate(engine: Engine, revision: str = "head", *, down: bool = False) -> None:
    """Upgrade the schema to ``revision`` (the newest by default), or downgrade to it with ``down``;
    on PostgreSQL under a transaction-scoped advisory lock, so concurrent starts do not race."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
