"""etcd-specific informer behaviour (the scenarios shared with ZooKeeper are in test_informer_backends)."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.informer import Informer
from controlplane.store.keys import KeySpace
from tests.fixtures.services import EtcdServer

pytestmark = pytest.mark.etcd


async def test_progress_requests_keep_a_quiet_stream_alive(keys: KeySpace) -> None:
    server = EtcdServer(progress_interval="10m")  # etcd's own default: no server-side help
    server.start()
    try:
        store = EtcdStore(EtcdConfig(endpoints=(server.url,), progress_interval_s=0.2))
        informer = Informer(store, keys.config_prefix(), idle_timeout_s=1.0)
        task = asyncio.create_task(informer.run())
        await informer.wait_synced(5)
        await asyncio.sleep(3)  # three idle bounds without a single change
        assert informer.stats.lists == 1 and "idle" not in informer.stats.ends
        rev = await store.put(keys.config("models", "late"), b"x")
        assert keys.config("models", "late") in (await informer.wait_for_revision(rev, 5)).items
        task.cancel()
        await store.close()
    finally:
        server.close()
