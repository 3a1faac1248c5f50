"""The Chroma adapter: embedded (``PersistentClient`` on a folder) or a Chroma server
(``HttpClient``). Vectors come from our embedders, never from Chroma's default embedding function
(it downloads a model at first use and fails offline)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rag.store import Filter, Match, Record, failures_as_unavailable

_UPSERT_BATCH = 1000  # Chroma caps one call's size (max_batch_size, ~5k here); stay well under it


class ChromaStore:
    backend = "chroma"

    def __init__(self, *, path: Path | None = None, url: str | None = None) -> None:
        if (path is None) == (url is None):
            raise ValueError("give a folder (embedded) or a server URL, not both")
        self._path, self._url = path, url
        self._client: Any = None
        self._collections: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return self._url or str(self._path)

    def _connect(self) -> Any:
        if self._client is None:
            import chromadb
            from chromadb.config import Settings

            settings = Settings(anonymized_telemetry=False)
            if self._url is not None:
                parts = urlsplit(self._url)
                self._client = chromadb.HttpClient(
                    host=parts.hostname or "127.0.0.1",
                    port=parts.port or (443 if parts.scheme == "https" else 8000),
                    ssl=parts.scheme == "https",
                    settings=settings,
                )
            else:
                assert self._path is not None
                self._path.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(self._path), settings=settings)
        return self._client

    def _calling(self, what: str) -> AbstractContextManager[None]:
        return failures_as_unavailable(f"Chroma at {self.where}", what, reset=self._collections.clear)

    def _collection(self, name: str) -> Any:
        found = self._collections.get(name)
        if found is None:
            found = self._collections[name] = self._connect().get_collection(name, embedding_function=None)
        return found

    def ensure(self, collection: str, *, fingerprint: str) -> bool:
        with self._lock, self._calling(f"open collection '{collection}'"):
            client = self._connect()
            existing = {c.name for c in client.list_collections()}
            if collection in existing:
                handle = client.get_collection(collection, embedding_function=None)
                if (handle.metadata or {}).get("fingerprint") == fingerprint:
                    self._collections[collection] = handle
                    return False
                client.delete_collection(collection)
            self._collections[collection] = client.create_collection(
                collection,
                embedding_function=None,
                metadata={"hnsw:space": "cosine", "fingerprint": fingerprint},
            )
            return True

    def upsert(self, collection: str, records: Sequence[Record]) -> None:
        with self._calling(f"write to '{collection}'"):
            handle = self._collection(collection)
            for start in range(0, len(records), _UPSERT_BATCH):
                part = records[start : start + _UPSERT_BATCH]
                handle.upsert(
                    ids=[r.id for r in part],
                    embeddings=[list(r.vector) for r in part],
                    metadatas=[dict(r.metadata) for r in part],
                )

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._calling(f"delete from '{collection}'"):
            handle = self._collection(collection)
            for start in range(0, len(ids), _UPSERT_BATCH):
                handle.delete(ids=list(ids[start : start + _UPSERT_BATCH]))

    def query(self, collection: str, vector: Sequence[float], *, k: int, where: Filter | None = None) -> list[Match]:
        with self._calling(f"search '{collection}'"):
            handle = self._collection(collection)
            found = handle.query(query_embeddings=[list(vector)], n_results=k, where=_where(where), include=["distances"])
        ids, distances = found["ids"][0], (found["distances"] or [[]])[0]
        return [Match(id_, 1.0 - float(d)) for id_, d in zip(ids, distances, strict=True)]  # cosine distance = 1 - similarity

    def count(self, collection: str) -> int:
        with self._calling(f"count '{collection}'"):
            return int(self._collection(collection).count())

    def drop(self, collection: str) -> None:
        with self._lock, self._calling(f"drop '{collection}'"):
            self._collections.pop(collection, None)
            client = self._connect()
            if collection in {c.name for c in client.list_collections()}:
                client.delete_collection(collection)


def _where(where: Filter | None) -> dict[str, Any] | None:
    """Our filter in Chroma's syntax: one field is ``{f: v}``, several are ``{"$and": [...]}``."""
    if not where:
        return None
    terms = [{key: dict(value) if isinstance(value, Mapping) else value} for key, value in where.items()]
    return terms[0] if len(terms) == 1 else {"$and": terms}
