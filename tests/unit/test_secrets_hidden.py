"""Secrets stay out of reprs (logs, tracebacks)."""

from __future__ import annotations

from controlplane.store.etcd import EtcdConfig


def test_etcd_config_repr_hides_the_password() -> None:
    config = EtcdConfig(username="root", password="s3cret-pass")
    assert "s3cret-pass" not in repr(config) and "root" in repr(config)
