"""Databases holding secrets or documents are created 0600."""

from __future__ import annotations

from pathlib import Path

from controlplane.db.engine import make_engine, migrate
from rag.catalog import SqliteCatalog


def test_the_metadata_database_and_the_rag_catalog_are_private(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'llmtune.db'}")
    migrate(engine)
    engine.dispose()
    catalog = SqliteCatalog(tmp_path / "rag" / "catalog.db")
    del catalog
    for path in (tmp_path / "data" / "llmtune.db", tmp_path / "rag" / "catalog.db"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    for wal in (tmp_path / "data").glob("llmtune.db-*"):
        assert wal.stat().st_mode & 0o077 == 0, wal
