"""The Weaviate adapter (weaviate-client v4, a Weaviate server over HTTP and gRPC). Vectors are our
own (``self_provided``); Weaviate wants UUIDs and class-like collection names, so ids become
UUIDv5 of our chunk ids and metadata fields get a ``m_`` prefix (a name Weaviate accepts)."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlsplit

from rag.errors import VectorStoreUnavailable
from rag.store import Filter, Match, Record, Scalar, failures_as_unavailable

_NAMESPACE = uuid.UUID("6f6c6c61-6d61-7475-6e65-72616700cafe")
_BATCH = 500


def class_name(collection: str) -> str:
    """``docs-v1`` -> ``Rag_docs_v1`` (Weaviate names start upper-case and hold [A-Za-z0-9_])."""
    return "Rag_" + re.sub(r"[^A-Za-z0-9_]", "_", collection)


def field_name(key: str) -> str:
    return "m_" + re.sub(r"[^A-Za-z0-9_]", "_", key)


def object_id(chunk_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, chunk_id))


class WeaviateStore:
    backend = "weaviate"

    def __init__(self, *, url: str, grpc_port: int | None = None) -> None:
        self._url, self._grpc_port = url, grpc_port
        self._client: Any = None
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        if self._client is None:
            import weaviate

            parts = urlsplit(self._url)
            secure = parts.scheme == "https"
            host = parts.hostname or "127.0.0.1"
            self._client = weaviate.connect_to_custom(
                http_host=host, http_port=parts.port or (443 if secure else 8080), http_secure=secure,
                grpc_host=host, grpc_port=self._grpc_port or 50051, grpc_secure=secure,
            )  # fmt: skip
        return self._client

    def _calling(self, what: str) -> AbstractContextManager[None]:
        return failures_as_unavailable(f"Weaviate at {self._url}", what)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def ensure(self, collection: str, *, fingerprint: str) -> bool:
        from weaviate.classes.config import Configure, DataType, Property, VectorDistances

        name, mark = class_name(collection), f"fingerprint={fingerprint}"
        with self._lock, self._calling(f"open collection '{collection}'"):
            client = self._connect()
            if client.collections.exists(name):
                if (client.collections.get(name).config.get().description or "") == mark:
                    return False
                client.collections.delete(name)
            client.collections.create(
                name,
                description=mark,
                vector_config=Configure.Vectors.self_provided(
                    vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
                ),
                properties=[Property(name="chunk_id", data_type=DataType.TEXT)],
            )
            return True

    def upsert(self, collection: str, records: Sequence[Record]) -> None:
        from weaviate.classes.data import DataObject

        with self._calling(f"write to '{collection}'"):
            handle = self._connect().collections.get(class_name(collection))
            for start in range(0, len(records), _BATCH):
                objects = [
                    DataObject(properties={"chunk_id": r.id, **_props(r.metadata)}, uuid=object_id(r.id), vector=list(r.vector))
                    for r in records[start : start + _BATCH]
                ]
                result = handle.data.insert_many(objects)
                if result.has_errors:
                    first = next(iter(result.errors.values()))
                    raise VectorStoreUnavailable(
                        f"Weaviate at {self._url} refused {len(result.errors)} object(s): {first.message}"
                    )

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        from weaviate.classes.query import Filter as WFilter

        if not ids:
            return
        with self._calling(f"delete from '{collection}'"):
            handle = self._connect().collections.get(class_name(collection))
            for start in range(0, len(ids), _BATCH):
                handle.data.delete_many(where=WFilter.by_id().contains_any([object_id(i) for i in ids[start : start + _BATCH]]))

    def query(self, collection: str, vector: Sequence[float], *, k: int, where: Filter | None = None) -> list[Match]:
        from weaviate.classes.query import MetadataQuery

        with self._calling(f"search '{collection}'"):
            handle = self._connect().collections.get(class_name(collection))
            found = handle.query.near_vector(
                near_vector=list(vector), limit=k, filters=_filters(where), return_metadata=MetadataQuery(distance=True),
                return_properties=["chunk_id"],
            )  # fmt: skip
        return [Match(str(o.properties["chunk_id"]), 1.0 - float(o.metadata.distance or 0.0)) for o in found.objects]

    def count(self, collection: str) -> int:
        with self._calling(f"count '{collection}'"):
            handle = self._connect().collections.get(class_name(collection))
            return int(handle.aggregate.over_all(total_count=True).total_count or 0)

    def drop(self, collection: str) -> None:
        with self._lock, self._calling(f"drop '{collection}'"):
            client = self._connect()
            if client.collections.exists(class_name(collection)):
                client.collections.delete(class_name(collection))


def _props(metadata: Mapping[str, Scalar]) -> dict[str, Scalar]:
    return {field_name(k): v for k, v in metadata.items()}


def _filters(where: Filter | None) -> Any:
    from weaviate.classes.query import Filter as WFilter

    if not where:
        return None
    terms = []
    for key, want in where.items():
        prop = WFilter.by_property(field_name(key))
        if isinstance(want, Mapping):
            values: Any = list(want["$in"])  # one type per field, as the data holds it
            terms.append(prop.contains_any(values))
        else:
            terms.append(prop.equal(want))
    return terms[0] if len(terms) == 1 else WFilter.all_of(terms)
