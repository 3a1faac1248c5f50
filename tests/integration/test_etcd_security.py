"""Production requirements of the etcd backend: TLS with client certificates and user/password auth."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from controlplane.store.base import Put
from controlplane.store.errors import StoreUnavailable
from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.informer import Informer
from tests.fixtures.services import EtcdServer

pytestmark = pytest.mark.etcd


@pytest.fixture(scope="module")
def secure_etcd() -> Iterator[EtcdServer]:
    server = EtcdServer(tls=True)
    server.start()
    server.etcdctl("user", "add", "root:s3cret", "--interactive=false")
    server.etcdctl("auth", "enable")
    yield server
    server.close()


def config(server: EtcdServer, *, password: str = "s3cret", cert: bool = True) -> EtcdConfig:
    c = server.certs
    return EtcdConfig(
        endpoints=(server.url,),
        username="root",
        password=password,
        ca_file=c["ca.crt"],
        cert_file=c["client.crt"] if cert else None,
        key_file=c["client.key"] if cert else None,
        timeout_s=3,
    )


async def test_tls_and_auth_cover_reads_writes_watch_and_leases(secure_etcd: EtcdServer) -> None:
    store = EtcdStore(config(secure_etcd))
    rev = await store.commit([Put("/sec/a", b"1"), Put("/sec/b", b"2")])
    assert (await store.get("/sec/a")).value == b"1"  # type: ignore[union-attr]
    informer = Informer(store, "/sec/")
    task = asyncio.create_task(informer.run())
    snap = await informer.wait_for_revision(rev, 5)
    assert set(snap.items) == {"/sec/a", "/sec/b"}
    later = await store.put("/sec/c", b"3")
    assert "/sec/c" in (await informer.wait_for_revision(later, 5)).items
    lease = await store.grant_lease(5)
    assert await store.keepalive(lease) > 0
    await store.revoke_lease(lease)
    task.cancel()
    await store.close()


async def test_wrong_password_is_a_clear_error(secure_etcd: EtcdServer) -> None:
    store = EtcdStore(config(secure_etcd, password="wrong"))
    with pytest.raises(StoreUnavailable, match="authentication failed"):
        await store.get("/sec/a")
    await store.close()


async def test_missing_client_certificate_is_refused(secure_etcd: EtcdServer) -> None:
    store = EtcdStore(config(secure_etcd, cert=False))
    with pytest.raises(StoreUnavailable):
        await store.get("/sec/a")
    await store.close()
