"""A control-plane replica does what its roles say (``LLMTUNE_ROLES``): the API, RAG, the loops."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from controlplane.api.app import create_app
from controlplane.settings import ROLES, Settings
from controlplane.store.keys import KeySpace
from tests.fixtures.services import EtcdServer

pytestmark = pytest.mark.etcd
ADMIN = {"Authorization": "Bearer admin-secret"}


def settings(etcd_url: str, tmp_path: Path, keys: KeySpace, roles: str) -> Settings:
    return Settings(
        store={"endpoints": [etcd_url], "namespace": keys.namespace, "timeout_s": 1.0},
        db={"url": f"sqlite:///{tmp_path / 'meta.db'}"},
        auth={"bootstrap_token": "admin-secret"},
        rag={"data_dir": str(tmp_path / "rag")},
        roles=roles,
    )


def test_roles_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTUNE_ROLES", "api, rag")
    assert Settings().roles == ["api", "rag"]
    monkeypatch.setenv("LLMTUNE_ROLES", "all")
    assert Settings().roles == list(ROLES)
    monkeypatch.delenv("LLMTUNE_ROLES")
    assert Settings().roles == list(ROLES)
    monkeypatch.setenv("LLMTUNE_ROLES", "api,cooking")
    with pytest.raises(ValueError, match="cooking"):
        Settings()


def test_an_api_replica_without_rag_says_where_rag_is(etcd_server: EtcdServer, tmp_path: Path, keys: KeySpace) -> None:
    with TestClient(create_app(settings(etcd_server.url, tmp_path, keys, "api,upkeep"))) as c:
        status = c.get("/api/v1/status", headers=ADMIN)
        assert status.status_code == 200 and status.json()["roles"] == ["api", "upkeep"]
        rag = c.post("/api/v1/rag/query", json={"collection": "docs", "query": "hi"}, headers=ADMIN)
        assert rag.status_code == 503 and "lacks 'rag'" in rag.json()["detail"]
        assert c.get("/api/v1/config", headers=ADMIN).status_code == 200


def test_a_loops_replica_serves_no_api_but_stays_ready(etcd_server: EtcdServer, tmp_path: Path, keys: KeySpace) -> None:
    with TestClient(create_app(settings(etcd_server.url, tmp_path, keys, "monitor,autoscaler,upkeep"))) as c:
        assert c.get("/readyz").status_code == 200 and c.get("/metrics").status_code == 200
        refused = c.get("/api/v1/config", headers=ADMIN)
        assert refused.status_code == 503 and "lacks 'api'" in refused.json()["detail"]
        assert c.get("/api/v1/config").status_code == 401  # a stranger learns nothing more
