"""The control plane serves the built UI at /ui: files, client-side routes as index.html, hashed
assets cached for a year (a missing one is a 404, never a page), a content security policy that
allows only this origin, and a clear 404 where the UI is not built."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from controlplane.api.app import create_app
from controlplane.settings import Settings
from controlplane.store.keys import KeySpace
from tests.fixtures.services import EtcdServer

pytestmark = pytest.mark.etcd


def app_with(etcd_url: str, tmp_path: Path, keys: KeySpace, ui_dir: Path) -> TestClient:
    settings = Settings(
        store={"endpoints": [etcd_url], "namespace": keys.namespace, "timeout_s": 1.0},
        db={"url": f"sqlite:///{tmp_path / 'meta.db'}"},
        auth={"bootstrap_token": "admin-secret"},
        api={"ui_dir": str(ui_dir)},
    )
    return TestClient(create_app(settings), follow_redirects=False)


@pytest.fixture
def built(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text('<!doctype html><div id="root"></div><script src="/ui/assets/index-abc123.js"></script>')
    (dist / "assets" / "index-abc123.js").write_text("console.log('ui')")
    (dist / "favicon.svg").write_text("<svg/>")
    return dist


@pytest.fixture
def client(etcd_server: EtcdServer, tmp_path: Path, keys: KeySpace, built: Path) -> Iterator[TestClient]:
    with app_with(etcd_server.url, tmp_path, keys, built) as c:
        yield c


def test_pages_assets_and_routes(client: TestClient) -> None:
    assert client.get("/").headers["location"] == "/ui/"
    assert client.get("/ui").status_code in (307, 308)
    page = client.get("/ui/")
    assert page.status_code == 200 and 'id="root"' in page.text and page.headers["cache-control"] == "no-cache"
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    route = client.get("/ui/config/models/chat")  # a client-side route: the app draws it
    assert route.status_code == 200 and route.text == page.text and route.headers["cache-control"] == "no-cache"
    asset = client.get("/ui/assets/index-abc123.js")
    assert asset.status_code == 200 and asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client.get("/ui/favicon.svg").headers["cache-control"] == "no-cache"
    for missing in ("/ui/assets/index-old999.js", "/ui/robots.txt"):
        gone = client.get(missing)
        assert gone.status_code == 404 and gone.headers["content-type"] == "application/problem+json", missing
    assert client.post("/ui/", content=b"x").status_code == 405
    assert client.get("/api/v1/status").status_code == 401  # the API is not opened by the UI's files


def test_a_clear_404_where_the_ui_is_not_built(etcd_server: EtcdServer, tmp_path: Path, keys: KeySpace) -> None:
    with app_with(etcd_server.url, tmp_path, keys, tmp_path / "nothing") as c:
        for path in ("/ui", "/ui/", "/ui/fleet"):
            answer = c.get(path)
            assert answer.status_code == 404 and "make ui" in answer.json()["detail"], path
