"""The ``VectorStore`` protocol every vector database adapter implements, the metadata filter
they all accept, and the in-memory implementation (tests, and the reference for the contract)."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from rag.errors import BadInput, VectorStoreUnavailable
from schemas.rag import METADATA_KEY

_FIELD = re.compile(METADATA_KEY)

Scalar = str | int | float | bool
#: ``{"field": value}`` (equal) or ``{"field": {"$in": [values]}}``; several fields must all match.
Filter = Mapping[str, Scalar | Mapping[str, Sequence[Scalar]]]


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    vector: Sequence[float]
    metadata: Mapping[str, Scalar]


@dataclass(frozen=True, slots=True)
class Match:
    id: str
    similarity: float  # cosine similarity: 1 is the same direction


class VectorStore(Protocol):
    """One vector database. Calls block (the engine runs them in a thread); a failure to reach the
    database raises ``VectorStoreUnavailable``."""

    backend: str

    def ensure(self, collection: str, *, fingerprint: str) -> bool:
        """Create ``collection`` for vectors of ``fingerprint``; when it holds vectors of another
        fingerprint, empty it first. True when the collection is new or was emptied."""

    def upsert(self, collection: str, records: Sequence[Record]) -> None: ...

    def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    def query(self, collection: str, vector: Sequence[float], *, k: int, where: Filter | None = None) -> list[Match]:
        """The ``k`` nearest records, most similar first."""

    def count(self, collection: str) -> int: ...

    def drop(self, collection: str) -> None: ...


@contextmanager
def failures_as_unavailable(system: str, what: str, *, reset: Callable[[], None] | None = None) -> Iterator[None]:
    """Any failure inside as ``VectorStoreUnavailable`` naming the database and the action: vector
    DB clients raise many types (their own, httpx's, grpc's, sqlite's) that all mean the same here.
    ``reset`` runs first (drop handles a server restart made stale)."""
    try:
        yield
    except VectorStoreUnavailable:
        raise
    except Exception as exc:
        if reset is not None:
            reset()
        raise VectorStoreUnavailable(f"{system} failed to {what}: {exc}") from exc


def check_filter(where: object) -> Filter | None:
    """``where`` as a ``Filter``, or ``BadInput`` saying what is wrong with it."""
    if where is None:
        return None
    if not isinstance(where, Mapping):
        raise BadInput("filters must be an object of metadata field -> value or {'$in': [values]}")
    for key, value in where.items():
        if not isinstance(key, str) or not _FIELD.match(key):
            raise BadInput(f"filter field {key!r}: a metadata field name (letters, digits, '_', '.', '-'; "
                           "starting with a letter or digit; operators such as '$and' are not supported)")  # fmt: skip
        if isinstance(value, Mapping):
            if set(value) != {"$in"} or not isinstance(value["$in"], list) or not value["$in"]:
                raise BadInput(f"filter field '{key}': the only operator is {{'$in': [values]}} with at least one value")
            if not all(_scalar(v) for v in value["$in"]):
                raise BadInput(f"filter field '{key}': '$in' takes strings, numbers or booleans")
        elif not _scalar(value):
            raise BadInput(f"filter field '{key}': a value is a string, number or boolean")
    return where


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def matches(metadata: Mapping[str, Scalar], where: Filter | None) -> bool:
    if not where:
        return True
    for key, want in where.items():
        have = metadata.get(key)
        if isinstance(want, Mapping):
            if have not in want["$in"]:
                return False
        elif have != want:
            return False
    return True


@dataclass
class _Collection:
    fingerprint: str
    records: dict[str, Record] = field(default_factory=dict)


class MemoryVectorStore:
    """Exact cosine search over dicts; fine up to some thousands of records."""

    backend = "memory"

    def __init__(self) -> None:
        self._collections: dict[str, _Collection] = {}
        self._lock = threading.Lock()

    def ensure(self, collection: str, *, fingerprint: str) -> bool:
        with self._lock:
            found = self._collections.get(collection)
            if found is not None and found.fingerprint == fingerprint:
                return False
            self._collections[collection] = _Collection(fingerprint)
            return True

    def _get(self, collection: str) -> _Collection:
        found = self._collections.get(collection)
        if found is None:
            raise KeyError(f"collection '{collection}' was never ensured")
        return found

    def upsert(self, collection: str, records: Sequence[Record]) -> None:
        with self._lock:
            target = self._get(collection).records
            for record in records:
                target[record.id] = record

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        with self._lock:
            target = self._get(collection).records
            for id_ in ids:
                target.pop(id_, None)

    def query(self, collection: str, vector: Sequence[float], *, k: int, where: Filter | None = None) -> list[Match]:
        with self._lock:
            records = list(self._get(collection).records.values())
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        scored = []
        for record in records:
            if not matches(record.metadata, where):
                continue
            other = math.sqrt(sum(x * x for x in record.vector)) or 1.0
            scored.append(Match(record.id, sum(a * b for a, b in zip(vector, record.vector, strict=False)) / (norm * other)))
        scored.sort(key=lambda m: (-m.similarity, m.id))
        return scored[:k]

    def count(self, collection: str) -> int:
        with self._lock:
            found = self._collections.get(collection)
            return len(found.records) if found else 0

    def drop(self, collection: str) -> None:
        with self._lock:
            self._collections.pop(collection, None)
