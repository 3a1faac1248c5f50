"""Requests with a body are authenticated before the body is read."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from controlplane.store.keys import KeySpace
from tests.e2e.test_llmctl import TOKEN, control_plane_process
from tests.fixtures.services import EtcdServer

pytestmark = pytest.mark.etcd


def head_only(url: str, authorization: str | None) -> tuple[bytes, float]:
    """A POST that declares a 7 MiB body and sends none of it: the answer, and how long it took."""
    parts = urlsplit(url)
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    request = (f"POST /api/v1/config:apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
               f"Content-Length: {7 << 20}\r\n\r\n").encode()  # fmt: skip
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(request)
        answer = conn.recv(4096)
    return answer, time.monotonic() - started


def test_a_stranger_is_refused_before_its_body_is_read(etcd_server: EtcdServer, keys: KeySpace, tmp_path: Path) -> None:
    with control_plane_process(etcd_server.url, keys.namespace, tmp_path) as (url, _env):
        for authorization in (None, "Bearer not-a-token"):
            answer, took = head_only(url, authorization)
            assert answer.startswith(b"HTTP/1.1 401") and took < 2, (authorization, answer[:200], took)
        # the admin's request is read (it waits for the body it declared: the socket times out)
        with pytest.raises(socket.timeout):
            parts = urlsplit(url)
            with socket.create_connection((parts.hostname, parts.port), timeout=1.5) as conn:
                conn.sendall((f"POST /api/v1/config:apply HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                              f"Content-Length: {7 << 20}\r\n\r\n").encode())  # fmt: skip
                conn.recv(4096)
