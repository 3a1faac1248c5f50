"""Adapter files kept by the control plane: the Adapter kind's two sources, the store's chunked,
content-addressed files (SQLite), and the agent's fetch, which keeps a file only if its digest
matches (against a real HTTP server that sends the wrong bytes)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agents.sidecar.artifacts import ArtifactError, ArtifactFetcher
from agents.sidecar.desired import desired_model
from controlplane.db import artifacts
from controlplane.db.artifacts import ArtifactStore
from controlplane.db.engine import make_engine, migrate
from controlplane.db.models import ArtifactChunk
from schemas.model import Adapter, Model
from tests.helpers import model_doc

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_an_adapter_is_a_path_on_the_node_or_files_the_control_plane_keeps() -> None:
    assert Adapter(path="/lora/a").path == "/lora/a"
    assert Adapter(files={"adapter_model.safetensors": D1}).files == {"adapter_model.safetensors": D1}
    for wrong in ({}, {"path": "/a", "files": {"x": D1}}):
        with pytest.raises(ValidationError, match="either 'path'"):
            Adapter.model_validate(wrong)
    with pytest.raises(ValidationError, match="pattern"):
        Adapter(files={"../escape": D1})
    with pytest.raises(ValidationError, match="pattern"):
        Adapter(files={"a.safetensors": "md5:abc"})

    kept = desired_model(Model.model_validate(model_doc("v", tag="v", base="b", adapters=[{"files": {"w": D2, "c": D1}}])))
    on_node = desired_model(Model.model_validate(model_doc("v", tag="v", base="b", adapters=[{"path": "/w"}])))
    assert kept.derived is not None and on_node.derived is not None
    assert kept.derived.adapters == ((("c", D1), ("w", D2)),)  # sorted by name: the order never changes the request
    assert kept.derived.fingerprint != on_node.derived.fingerprint


def test_files_are_kept_once_by_content_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts, "CHUNK_BYTES", 1000)
    engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    migrate(engine)
    store = ArtifactStore(engine)
    data = bytes(range(256)) * 10  # 2560 bytes: three chunks
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "copy.bin").write_bytes(data)
    digest = store.put_file(tmp_path / "a.bin")
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert store.put_file(tmp_path / "copy.bin") == digest  # the same content: kept once
    info = store.info(digest)
    assert info is not None and (info.size, info.chunks) == (2560, 3)
    assert b"".join(store.chunk(digest, i) for i in range(info.chunks)) == data
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(ArtifactChunk)) == 3
    assert store.info("sha256:" + "0" * 64) is None
    with pytest.raises(LookupError):
        store.chunk(digest, 3)


@pytest.fixture
async def liar() -> AsyncIterator[str]:
    """An HTTP server that answers every request with 200 and the same five bytes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nwrong")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()


async def test_a_fetched_file_whose_bytes_do_not_match_is_not_kept(liar: str, tmp_path: Path) -> None:
    fetcher = ArtifactFetcher(liar, "token")
    try:
        with pytest.raises(ArtifactError, match="hash to") as caught:
            await fetcher.fetch(D1, tmp_path / "w.safetensors")
        assert caught.value.status == 0  # worth another try
        assert os.listdir(tmp_path) == [] and fetcher.fetched == 0
        good = "sha256:" + hashlib.sha256(b"wrong").hexdigest()
        await fetcher.fetch(good, tmp_path / "w.safetensors")
        assert (tmp_path / "w.safetensors").read_bytes() == b"wrong" and fetcher.fetched == 1
    finally:
        await fetcher.close()
    unreachable = ArtifactFetcher("http://127.0.0.1:9", None)
    with pytest.raises(ArtifactError, match="did not answer"):
        await unreachable.fetch(D1, tmp_path / "x")
    await unreachable.close()
