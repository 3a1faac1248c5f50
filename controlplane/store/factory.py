"""Builds the configured ConfigStore backend from settings."""

from __future__ import annotations

from controlplane.store.base import ConfigStore
from controlplane.store.etcd import EtcdConfig, EtcdStore
from controlplane.store.memory import MemoryStore
from controlplane.store.settings import StoreSettings
from controlplane.store.zookeeper import ZooKeeperConfig, ZooKeeperStore


def open_store(settings: StoreSettings) -> ConfigStore:
    if settings.backend == "memory":
        return MemoryStore()
    if settings.backend == "zookeeper":
        return ZooKeeperStore(
            ZooKeeperConfig(
                hosts=settings.zookeeper_hosts,
                root=settings.zookeeper_root,
                timeout_s=settings.timeout_s,
                progress_interval_s=settings.progress_interval_s,
            )
        )
    return EtcdStore(
        EtcdConfig(
            endpoints=tuple(settings.endpoints),
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            ca_file=settings.ca_file,
            cert_file=settings.cert_file,
            key_file=settings.key_file,
            timeout_s=settings.timeout_s,
            progress_interval_s=settings.progress_interval_s,
        )
    )
