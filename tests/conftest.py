"""Shared fixtures: real etcd and PostgreSQL servers, stores isolated by namespace."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from controlplane.db.engine import make_engine, migrate
from controlplane.store.base import ConfigStore
from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.keys import KeySpace
from controlplane.store.memory import MemoryStore
from controlplane.store.zookeeper import ZooKeeperConfig, ZooKeeperStore
from rag.catalog import Catalog, SqliteCatalog
from rag.pg_catalog import PgCatalog
from tests.fixtures.fleet import Fleet
from tests.fixtures.services import ChromaServer, EtcdServer, PostgresServer, RedisServer, ZooKeeperServer, free_port
from tests.sim.server import SimServer

#: CI sets this so that a missing service fails the run instead of skipping tests.
REQUIRE_SERVICES = os.environ.get("LLMTUNE_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    server = EtcdServer()
    server.start()
    yield server
    server.close()


S = TypeVar("S", ZooKeeperServer, PostgresServer, RedisServer, ChromaServer)


def _installed(factory: Callable[[], S]) -> Iterator[S]:
    """Start a server from a Debian package; skip locally when it is missing (CI fails instead)."""
    try:
        server = factory()
    except FileNotFoundError as exc:
        if REQUIRE_SERVICES:
            raise
        pytest.skip(str(exc))
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    yield from _installed(ZooKeeperServer)


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd of the test's own, for tests that stop, restart or compact it."""
    server = EtcdServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from _installed(PostgresServer)


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, then one in the session's PostgreSQL (tests run on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def rag_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    """An empty RAG catalog: SQLite (FTS5) in a file, then PostgreSQL in the session's server."""
    if request.param == "sqlite":
        cat: Catalog = SqliteCatalog(tmp_path / "catalog.sqlite")
        yield cat
        cat.close()
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    engine = make_engine(server.new_database())
    migrate(engine)
    yield PgCatalog(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from _installed(RedisServer)


@pytest.fixture
async def finetune_fleet(
    etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[Fleet]:
    """A control plane with fine-tuning on: its own queue on the session's Redis (other tests' runs
    never reach this test's workers), fast heartbeats, and a lost worker given up on after 2 s."""
    fleet = Fleet(etcd_server.url, keys, tmp_path)
    queue = f"test-ft-{uuid.uuid4().hex[:8]}"
    await fleet.start_control_plane(
        finetune={"redis_url": redis_server.url, "queue": queue, "heartbeat_s": 0.2, "stale_after_s": 2.0}
    )
    try:
        yield fleet
    finally:
        await fleet.close()


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[ChromaServer]:
    yield from _installed(ChromaServer)


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    """A simulated Ollama node on a free port."""
    server = SimServer(free_port())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def keys() -> KeySpace:
    """A fresh namespace per test, so tests sharing one etcd never see each other's keys."""
    return KeySpace(f"t{uuid.uuid4().hex[:10]}")


def open_backend(request: pytest.FixtureRequest, backend: str, *, etcd_fixture: str = "etcd_server") -> ConfigStore:
    """A store of ``backend``; ZooKeeper stores get a root of their own (its data is global)."""
    if backend == "memory":
        return MemoryStore()
    if backend == "etcd":
        server: EtcdServer = request.getfixturevalue(etcd_fixture)
        return EtcdStore(EtcdConfig(endpoints=(server.url,)))
    zk: ZooKeeperServer = request.getfixturevalue("zookeeper_server")
    return ZooKeeperStore(ZooKeeperConfig(hosts=zk.hosts, root=f"/t{uuid.uuid4().hex[:10]}", progress_interval_s=1.0))


@pytest.fixture(params=["memory", "etcd", "zookeeper"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ConfigStore]:
    """Every backend, for the contract suite."""
    the_store = open_backend(request, request.param)
    yield the_store
    await the_store.close()


@pytest.fixture
def own_zookeeper() -> Iterator[ZooKeeperServer]:
    """A ZooKeeper of the test's own, for tests that restart it."""
    yield from _installed(ZooKeeperServer)
