"""Alembic migrations on both SQL databases (a SQLite file and a real PostgreSQL): the schema the
models declare is the one the migrations build, and data written before a migration survives it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.db.engine import make_engine, migrate
from controlplane.db.models import Base, FineTuneJob


@pytest.fixture
def engine(sql_url: str) -> Iterator[Engine]:
    eng = make_engine(sql_url)
    yield eng
    eng.dispose()


def job(job_id: str, output: str, state: str = "queued", created_at: float | None = None) -> FineTuneJob:
    return FineTuneJob(
        id=job_id, request_digest="d", actor="me", state=state, method="modelfile", base_model="small", output_model=output,
        auto_experiment=False, experiment_share=0.1, hyperparameters={}, dataset_id="ds", base_spec={}, progress=0.0,
        attempt=1, cancel_requested=False, metrics={}, created_at=created_at if created_at is not None else time.time(),
    )  # fmt: skip


def _not_rag(name: str | None, kind: str, _parent: object) -> bool:
    """The RAG catalog's tables (PostgreSQL only) belong to rag.pg_catalog, which writes them with SQL of its own."""
    return not (kind == "table" and (name or "").startswith("rag_"))


def test_the_migrations_build_the_schema_the_models_declare(engine: Engine) -> None:
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_name": _not_rag}), Base.metadata)
    assert diff == [], diff
    if engine.dialect.name == "postgresql":  # and the catalog's tables are there
        with engine.connect() as conn:
            tables = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'rag_%'")).scalars())
        assert tables == {"rag_collections", "rag_documents", "rag_chunks", "rag_postings", "rag_terms"}


def test_one_active_job_per_output_keeps_the_oldest_of_jobs_the_old_race_left(engine: Engine) -> None:
    migrate(engine, "0003")
    now = time.time()
    with Session(engine) as session, session.begin():  # what two submits at the same instant could leave
        session.add_all([
            job("ft-old", "x", "running", created_at=now - 10), job("ft-new", "x", created_at=now),
            job("ft-done", "x", "succeeded", created_at=now - 20), job("ft-other", "y", created_at=now),
        ])  # fmt: skip
    migrate(engine)
    with Session(engine) as session:
        states = {j.id: (j.state, j.error) for j in session.scalars(select(FineTuneJob))}
    assert states["ft-old"] == ("running", None) and states["ft-other"] == ("queued", None)
    assert states["ft-done"] == ("succeeded", None)
    assert states["ft-new"][0] == "failed" and "making model 'x'" in (states["ft-new"][1] or "")
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        session.add(job("ft-third", "x"))
    with Session(engine) as session, session.begin():
        session.add(job("ft-ended", "x", "cancelled"))  # ended jobs do not count
    migrate(engine, "0003", down=True)
    with Session(engine) as session, session.begin():
        session.add(job("ft-third", "x"))  # without the index, the duplicate goes in again
