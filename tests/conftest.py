"""Shared fixtures: real etcd and PostgreSQL servers, stores isolated by namespace."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from controlplane.store.base import ConfigStore
from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.keys import KeySpace
from controlplane.store.memory import MemoryStore
from tests.fixtures.services import EtcdServer, PostgresServer

#: CI sets this so that a missing service fails the run instead of skipping tests.
REQUIRE_SERVICES = os.environ.get("LLMTUNE_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    server = EtcdServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd of the test's own, for tests that stop, restart or compact it."""
    server = EtcdServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except FileNotFoundError as exc:
        if REQUIRE_SERVICES:
            raise
        pytest.skip(str(exc))
    server.start()
    yield server
    server.close()


@pytest.fixture
def keys() -> KeySpace:
    """A fresh namespace per test, so tests sharing one etcd never see each other's keys."""
    return KeySpace(f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture(params=["memory", "etcd"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ConfigStore]:
    """Every backend, for the contract suite."""
    if request.param == "memory":
        the_store: ConfigStore = MemoryStore()
    else:
        server: EtcdServer = request.getfixturevalue("etcd_server")
        the_store = EtcdStore(EtcdConfig(endpoints=(server.url,)))
    yield the_store
    await the_store.close()
