"""The catalog of ingested documents and their chunks (here in SQLite, beside the embedded vector
data; ``rag.pg_catalog`` keeps it in PostgreSQL for replicas that share one database):
what each collection holds (document id, content hash, metadata), the chunk texts (for snippets
and re-indexing), and the keyword index (FTS5, ranked by BM25; one index per collection, so
each collection's term statistics are its own).

The catalog is the source of truth for what a collection contains: a batch becomes visible in
one SQLite transaction after its vectors are written, so a failure half-way leaves nothing of the
batch; a vector without a catalog row (a crash between the two writes) is never returned."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rag.store import Filter, Scalar

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, generation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL, doc_id TEXT NOT NULL, hash TEXT NOT NULL, chunks INTEGER NOT NULL,
    bytes INTEGER NOT NULL, metadata TEXT NOT NULL, updated REAL NOT NULL, PRIMARY KEY (collection, doc_id));
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT NOT NULL, collection TEXT NOT NULL, doc_id TEXT NOT NULL, idx INTEGER NOT NULL,
    text TEXT NOT NULL, metadata TEXT NOT NULL, PRIMARY KEY (collection, id));
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks (collection, doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_words USING fts5(text, tokenize='porter unicode61');
CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_terms USING fts5vocab(temp, query_words, 'instance');
"""
_TOKENIZER = "porter unicode61"
_SMALL = 1000  # chunks: below this, searching common words costs little
_TERMS_CACHED = 100_000  # per collection, until its content changes
_WORD = re.compile(r"\w+", re.UNICODE)
#: Rows a keyword query may score unpruned: FTS5's bm25() costs ~0.8 µs a row (2 cores here), so ~7 ms.
PRUNE_ROWS = 8_000
FTS5_K1 = 1.2  # bm25()'s k1


@dataclass(frozen=True, slots=True)
class _Term:
    """A query word and the number of chunks that hold its terms: ``rows`` at most, ``least_rows`` at least."""

    word: str
    rows: int
    least_rows: int


def _phrase(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def _fts5_idf(total: int, rows: int) -> float:
    """FTS5's IDF for a phrase held by ``rows`` of ``total`` rows (floored at 1e-6, as bm25() does)."""
    return max(math.log((total - rows + 0.5) / (rows + 0.5)), 1e-6)


@dataclass(frozen=True, slots=True)
class StoredChunk:
    id: str
    doc_id: str
    index: int
    text: str
    metadata: dict[str, Scalar]


@dataclass(frozen=True, slots=True)
class StoredDocument:
    id: str
    hash: str
    bytes: int
    metadata: dict[str, Scalar]
    chunks: Sequence[StoredChunk]


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: str
    hash: str
    chunks: int
    bytes: int
    metadata: dict[str, Scalar]
    updated: float


class Catalog(Protocol):
    """What the engine needs of a catalog: ``SqliteCatalog`` (a file beside the embedded vectors)
    or ``rag.pg_catalog.PgCatalog`` (the metadata database that control-plane replicas share).
    Calls block; the engine runs them in a thread."""

    def fingerprint(self, collection: str) -> str | None: ...
    def generation(self, collection: str) -> int: ...
    def set_fingerprint(self, collection: str, fingerprint: str) -> None: ...
    def hashes(self, collection: str, doc_ids: Sequence[str]) -> dict[str, str]: ...
    def replace(self, collection: str, documents: Sequence[StoredDocument]) -> list[str]: ...
    def remove(self, collection: str, doc_ids: Sequence[str]) -> list[str]: ...
    def documents(self, collection: str, *, offset: int = 0, limit: int = 100) -> tuple[list[DocumentInfo], int]: ...
    def chunk_count(self, collection: str) -> int: ...
    def chunks(self, collection: str, ids: Sequence[str]) -> dict[str, StoredChunk]: ...
    def all_chunks(self, collection: str, *, batch: int = 256) -> Iterator[list[StoredChunk]]: ...
    def keyword(self, collection: str, query: str, *, k: int, where: Filter | None = None) -> list[tuple[str, float]]: ...
    def drop(self, collection: str) -> None: ...
    def close(self) -> None: ...


class SqliteCatalog:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # created 0600: documents are nobody else's to read
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        # per collection: chunk count and document frequency by term, for keyword search; this
        # process is the only writer of its catalog, so dropping an entry on every write suffices
        self._stats: dict[str, tuple[int, dict[str, int]]] = {}
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def fingerprint(self, collection: str) -> str | None:
        found: str | None = self._one("SELECT fingerprint FROM collections WHERE name = ?", (collection,))
        return found

    def collections(self) -> list[tuple[str, str]]:
        """Every collection held, with its fingerprint."""
        with self._lock:
            return [(r[0], r[1]) for r in self._db.execute("SELECT name, fingerprint FROM collections ORDER BY name")]

    def generation(self, collection: str) -> int:
        """Goes up with every change of the collection's content (cache keys carry it)."""
        return int(self._one("SELECT generation FROM collections WHERE name = ?", (collection,)) or 0)

    def set_fingerprint(self, collection: str, fingerprint: str) -> None:
        with self._txn() as db:
            db.execute(
                "INSERT INTO collections (name, fingerprint, generation) VALUES (?, ?, 1) ON CONFLICT (name) DO UPDATE "
                "SET fingerprint = excluded.fingerprint, generation = collections.generation + 1",
                (collection, fingerprint),
            )

    def hashes(self, collection: str, doc_ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(doc_ids), 500):
                part = doc_ids[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT doc_id, hash FROM documents WHERE collection = ? AND doc_id IN ({marks})", (collection, *part)
                )
                out.update(dict(rows.fetchall()))
        return out

    @staticmethod
    def _words(collection: str) -> str:
        """The name of the collection's keyword index (FTS5 over ``chunks``, rows by chunk rowid)."""
        return "words_" + hashlib.blake2b(collection.encode(), digest_size=8).hexdigest()

    def _ensure_words(self, db: sqlite3.Connection, collection: str) -> str:
        table = self._words(collection)
        db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING fts5(text, content='chunks', content_rowid='rowid', "
                   f"tokenize='{_TOKENIZER}')")  # fmt: skip
        db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {table}_terms USING fts5vocab({table}, 'row')")
        return table

    def replace(self, collection: str, documents: Sequence[StoredDocument]) -> list[str]:
        """Put ``documents`` in place of any earlier versions, in one transaction; the ids of the
        chunks they replace (their vectors are now unused)."""
        now = time.time()
        with self._txn() as db:
            words = self._ensure_words(db, collection)
            old = self._remove(db, collection, [d.id for d in documents])
            for doc in documents:
                db.execute(
                    "INSERT INTO documents (collection, doc_id, hash, chunks, bytes, metadata, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (collection, doc.id, doc.hash, len(doc.chunks), doc.bytes, json.dumps(doc.metadata), now),
                )
                db.executemany(
                    "INSERT INTO chunks (id, collection, doc_id, idx, text, metadata) VALUES (?, ?, ?, ?, ?, ?)",
                    [(c.id, collection, doc.id, c.index, c.text, json.dumps(c.metadata)) for c in doc.chunks],
                )
                db.execute(
                    f"INSERT INTO {words} (rowid, text) SELECT rowid, text FROM chunks WHERE collection = ? AND doc_id = ?",
                    (collection, doc.id),
                )
            self._bump(db, collection)
        return old

    def remove(self, collection: str, doc_ids: Sequence[str]) -> list[str]:
        """Forget ``doc_ids``; the ids of their chunks."""
        with self._txn() as db:
            self._ensure_words(db, collection)
            old = self._remove(db, collection, doc_ids)
            self._bump(db, collection)
        return old

    def _remove(self, db: sqlite3.Connection, collection: str, doc_ids: Sequence[str]) -> list[str]:
        old: list[str] = []
        for start in range(0, len(doc_ids), 500):
            part = list(doc_ids[start : start + 500])
            marks = ",".join("?" * len(part))
            args = (collection, *part)
            old += [r[0] for r in db.execute(f"SELECT id FROM chunks WHERE collection = ? AND doc_id IN ({marks})", args)]
            db.execute(  # an external-content index forgets a row only when told its text
                f"INSERT INTO {self._words(collection)} ({self._words(collection)}, rowid, text) "
                f"SELECT 'delete', rowid, text FROM chunks WHERE collection = ? AND doc_id IN ({marks})",
                args,
            )
            db.execute(f"DELETE FROM chunks WHERE collection = ? AND doc_id IN ({marks})", args)
            db.execute(f"DELETE FROM documents WHERE collection = ? AND doc_id IN ({marks})", args)
        return old

    def _bump(self, db: sqlite3.Connection, collection: str) -> None:
        db.execute("UPDATE collections SET generation = generation + 1 WHERE name = ?", (collection,))
        self._stats.pop(collection, None)

    def documents(self, collection: str, *, offset: int = 0, limit: int = 100) -> tuple[list[DocumentInfo], int]:
        with self._lock:
            total = self._db.execute("SELECT count(*) FROM documents WHERE collection = ?", (collection,)).fetchone()[0]
            rows = self._db.execute(
                "SELECT doc_id, hash, chunks, bytes, metadata, updated FROM documents WHERE collection = ? "
                "ORDER BY doc_id LIMIT ? OFFSET ?",
                (collection, limit, offset),
            ).fetchall()
        return [DocumentInfo(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows], int(total)

    def chunk_count(self, collection: str) -> int:
        return int(self._one("SELECT count(*) FROM chunks WHERE collection = ?", (collection,)) or 0)

    def chunks(self, collection: str, ids: Sequence[str]) -> dict[str, StoredChunk]:
        """The chunks among ``ids`` that the collection holds (others are left out)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, doc_id, idx, text, metadata FROM chunks WHERE collection = ? AND id IN ({marks})", (collection, *ids)
            ).fetchall()
        return {r[0]: StoredChunk(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows}

    def all_chunks(self, collection: str, *, batch: int = 256) -> Iterator[list[StoredChunk]]:
        """Every chunk of the collection, a batch at a time (re-indexing)."""
        last = ""
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, doc_id, idx, text, metadata FROM chunks WHERE collection = ? AND id > ? ORDER BY id LIMIT ?",
                    (collection, last, batch),
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [StoredChunk(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def keyword(self, collection: str, query: str, *, k: int, where: Filter | None = None) -> list[tuple[str, float]]:
        """The ``k`` chunks that match ``query``'s words best by BM25 (any word matches), best first,
        with BM25 scores (higher is better).

        In a collection of 1,000 chunks or more, words found in more than half of them are left out
        of the search: BM25 gives them no weight (FTS5 floors their negative IDF near zero), while
        matching them would score nearly every chunk ("the", "how", ...). Without a filter, a query
        whose words are found in more than ``PRUNE_ROWS`` chunks in all is pruned (``_top``)."""
        words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:64]
        if not words:
            return []
        with self._lock:
            table = self._words(collection)
            if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
                return []
            terms = self._informative(table, collection, words)
            if not terms:
                return []
            if not where:  # rank in the index alone, then look up the k ids
                ranked = self._top(table, self._stats[collection][0], terms, k)
                marks = ",".join("?" * len(ranked))
                ids = dict(self._db.execute(f"SELECT rowid, id FROM chunks WHERE rowid IN ({marks})", [r for r, _ in ranked]))
                return [(ids[r], -rank) for r, rank in ranked if r in ids]  # FTS5's bm25() is negative: lower is better
            sql = f"SELECT c.id, bm25({table}) AS rank FROM {table} JOIN chunks c ON c.rowid = {table}.rowid "
            sql += f"WHERE {table} MATCH ?"
            args: list[Any] = [" OR ".join(_phrase(t.word) for t in terms)]
            for key, want in where.items():
                path = "$." + json.dumps(key)
                if isinstance(want, dict):
                    values = list(want["$in"])
                    sql += f" AND json_extract(c.metadata, ?) IN ({','.join('?' * len(values))})"
                    args += [path, *values]
                else:
                    sql += " AND json_extract(c.metadata, ?) = ?"
                    args += [path, want]
            sql += " ORDER BY rank LIMIT ?"
            args.append(k)
            rows = self._db.execute(sql, args).fetchall()
        return [(r[0], -float(r[1])) for r in rows]

    def _bm25(self, table: str, match: str, k: int) -> list[tuple[int, float]]:
        """(rowid, FTS5's bm25(): negative, lower is better) of the best ``k`` rows ``match`` finds."""
        sql = f"SELECT rowid, bm25({table}) AS rank FROM {table} WHERE {table} MATCH ? ORDER BY rank LIMIT ?"
        rows: list[tuple[int, float]] = self._db.execute(sql, (match, k)).fetchall()
        return rows

    def _top(self, table: str, total: int, terms: list[_Term], k: int) -> list[tuple[int, float]]:
        """The ``k`` best rows by BM25 over every term, pruned where that would score many rows.

        FTS5's bm25() costs ~0.8 µs for each row it scores (reading the row's positions), so a query
        of words found in tens of thousands of chunks cost 50 ms and more at 100,000 chunks. Here the
        rarest words, found in at most ``PRUNE_ROWS`` chunks together, choose the candidates, and
        those are scored by every word, exactly: FTS5 scores a row by each phrase of its MATCH
        expression that the row holds, so ``R AND C`` (R: any rare word, C: any common one) and
        ``R NOT C`` score each chunk holding a rare word once, by all its words. A chunk holding
        none of the rare words scores less than the common words' bound, (k1 + 1) x the sum of
        their IDFs; when the k-th candidate scores at least that, the answer is exactly the unpruned
        one. Otherwise the chunks holding every common word are scored too (exact scores), and
        chunks holding only some of them are left out: the one approximation, measured by
        bench/rag_catalog.py against the full ranking. ``PgCatalog`` prunes the same way."""
        every = " OR ".join(_phrase(t.word) for t in terms)
        if total <= PRUNE_ROWS or sum(t.rows for t in terms) <= PRUNE_ROWS:
            return self._bm25(table, every, k)
        ordered = sorted(terms, key=lambda t: t.rows)
        rare: list[_Term] = []
        held = 0
        for term in ordered:
            held += term.rows
            if held > PRUNE_ROWS:
                break
            rare.append(term)
        common = ordered[len(rare) :]
        best: list[tuple[int, float]] = []
        some_rare = ""
        if rare:
            some_rare = "(" + " OR ".join(_phrase(t.word) for t in rare) + ")"
            some_common = "(" + " OR ".join(_phrase(t.word) for t in common) + ")"
            best = self._bm25(table, f"{some_rare} AND {some_common}", k) + self._bm25(table, f"{some_rare} NOT {some_common}", k)
            best = sorted(best, key=lambda r: r[1])[:k]
            bound = (FTS5_K1 + 1) * sum(_fts5_idf(total, t.least_rows) for t in common)
            if len(best) == k and -best[-1][1] >= bound:
                return best
        if len(common) == 1:  # no smaller set of chunks to score: the full ranking
            return self._bm25(table, every, k)
        all_common = "(" + " AND ".join(_phrase(t.word) for t in common) + ")"
        best += self._bm25(table, f"{all_common} NOT {some_rare}" if rare else all_common, k)
        return sorted(best, key=lambda r: r[1])[:k]

    def _informative(self, table: str, collection: str, words: list[str]) -> list[_Term]:
        """``words`` less those in more than half of the collection's chunks (the caller holds the lock),
        with the number of chunks that hold them. The index's own tokenizer (on a scratch table) gives
        each word's terms, as the index stores them: a word of several terms (``time_style``) is a
        phrase to FTS5, held by at most as many chunks as its rarest term and possibly none."""
        db = self._db
        db.execute("DELETE FROM temp.query_words")
        db.executemany("INSERT INTO temp.query_words (rowid, text) VALUES (?, ?)", list(enumerate(words)))
        terms_of: dict[int, list[str]] = {}
        for term, doc in db.execute("SELECT term, doc FROM temp.query_terms"):
            terms_of.setdefault(doc, []).append(term)
        stats = self._stats.get(collection)
        if stats is None:
            total = db.execute("SELECT count(*) FROM chunks WHERE collection = ?", (collection,)).fetchone()[0]
            stats = self._stats[collection] = (total, {})
        total, seen = stats
        if total < _SMALL:
            return [_Term(w, total, 0) for i, w in enumerate(words) if i in terms_of]
        kept = []
        for i, word in enumerate(words):
            counts = []
            for term in terms_of.get(i, []):
                if term not in seen:  # a vocabulary lookup costs ~0.3 ms; queries repeat their common words
                    found = db.execute(f"SELECT doc FROM {table}_terms WHERE term = ?", (term,)).fetchone()
                    if len(seen) >= _TERMS_CACHED:
                        seen.clear()
                    seen[term] = 0 if found is None else int(found[0])
                counts.append(seen[term])
            if counts and min(counts) > 0 and min(counts) * 2 <= total:
                kept.append(_Term(word, min(counts), min(counts) if len(counts) == 1 else 0))
        return kept

    def drop(self, collection: str) -> None:
        with self._txn() as db:
            db.execute(f"DROP TABLE IF EXISTS {self._words(collection)}_terms")
            db.execute(f"DROP TABLE IF EXISTS {self._words(collection)}")
            db.execute("DELETE FROM chunks WHERE collection = ?", (collection,))
            db.execute("DELETE FROM documents WHERE collection = ?", (collection,))
            db.execute("DELETE FROM collections WHERE name = ?", (collection,))
            self._stats.pop(collection, None)
