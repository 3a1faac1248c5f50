"""The retrieval evaluation harness: corpora with questions whose answering documents are known,
ingested through the RAG engine (the default chunking, the local embedder, embedded Chroma and a
catalog: SQLite FTS5 or PostgreSQL), each side's candidates per question, and the ranking figures
(recall@1, recall@5, MRR and nDCG@10 over documents) of any ranking made from them.

Corpora (the questions are this repository's, in ``bench/rag_eval/*.yaml``; the texts are not):

* ``python-reference``: the Python language reference as CPython ships it for ``help()``
  (``pydoc_data.topics``, part of the standard library on every Python), one document per topic;
  the two topics that repeat others whole (``compound``, ``specialnames``) and ``else`` (the same
  text as ``if``) are left out, so each question has the documents that answer it.
* ``coreutils``: GNU coreutils' manual as Debian installs it (``/usr/share/info/coreutils.info.gz``,
  from the essential ``coreutils`` package), one document per Info node, less the index and the
  tag table.
* ``project``: the RAG tests' own small corpus (``tests/integration/rag_corpus.py``): near-duplicate
  documents told apart only by their error codes, and paraphrased questions."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import math
import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from rag.embedding import LocalEmbedder

HERE = Path(__file__).resolve().parent
COREUTILS_INFO = Path("/usr/share/info/coreutils.info.gz")
_SKIPPED_TOPICS = {"compound", "specialnames", "else"}
_SKIPPED_NODES = {"Top", "Concept index", "Tag Table:", "End Tag Table", "Local Variables:"}


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    docs: frozenset[str]  # any of them answers it
    kind: str  # "question" (a paraphrase) or "identifier" (a name as it is spelled)


@dataclass(frozen=True, slots=True)
class Corpus:
    name: str
    source: str
    documents: dict[str, str]
    questions: list[Question]


def _questions(file: str, documents: dict[str, str]) -> list[Question]:
    data = yaml.safe_load((HERE / file).read_text())
    out = []
    for item in data["questions"]:
        docs = item["doc"] if isinstance(item["doc"], list) else [item["doc"]]
        unknown = [d for d in docs if d not in documents]
        if unknown:
            raise ValueError(f"{file}: {item['q']!r} names documents the corpus lacks: {unknown}")
        out.append(Question(item["q"], frozenset(docs), item.get("kind", "question")))
    return out


def python_reference() -> Corpus:
    from pydoc_data.topics import topics

    documents = {name: text for name, text in sorted(topics.items()) if name not in _SKIPPED_TOPICS}
    return Corpus("python-reference", "pydoc_data.topics (CPython's language reference)", documents,
                  _questions("python_reference.yaml", documents))  # fmt: skip


def coreutils(path: Path = COREUTILS_INFO) -> Corpus | None:
    """None where the manual is not installed."""
    if not path.exists():
        return None
    text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
    documents: dict[str, str] = {}
    for node in text.split("\x1f")[1:]:
        lines = node.lstrip("\n").split("\n", 1)
        found = re.search(r"Node: ([^,]+?)(?:,  (?:Next|Prev|Up):|$)", lines[0])
        if found is None or found.group(1) in _SKIPPED_NODES or len(lines) < 2:
            continue
        documents[found.group(1)] = lines[1].strip()
    return Corpus("coreutils", f"{path} (GNU coreutils' manual)", documents, _questions("coreutils.yaml", documents))


def project() -> Corpus:
    from tests.integration.rag_corpus import CODES, DOCS, QUESTIONS

    questions = [Question(q, frozenset([d]), "question") for q, d in QUESTIONS.items()]
    questions += [Question(q, frozenset([d]), "identifier") for q, d in CODES.items()]
    return Corpus("project", "tests/integration/rag_corpus.py (written for the RAG tests)", dict(DOCS), questions)


def corpora() -> list[Corpus]:
    return [c for c in (python_reference(), coreutils(), project()) if c is not None]


# --- figures ---


@dataclass(frozen=True, slots=True)
class Figures:
    recall1: float
    recall5: float
    mrr: float
    ndcg10: float
    n: int

    def __add__(self, other: Figures) -> Figures:
        n = self.n + other.n
        if not n:
            return self

        def mix(a: float, b: float) -> float:
            return (a * self.n + b * other.n) / n

        return Figures(mix(self.recall1, other.recall1), mix(self.recall5, other.recall5), mix(self.mrr, other.mrr),
                       mix(self.ndcg10, other.ndcg10), n)  # fmt: skip


NONE = Figures(0.0, 0.0, 0.0, 0.0, 0)


def doc_of(chunk_id: str) -> str:
    """The engine's chunk ids are ``<document id>#<content hash>#<index>``."""
    return chunk_id.rsplit("#", 2)[0]


def figures(ranked: Sequence[str], relevant: frozenset[str]) -> Figures:
    """``ranked``: chunk ids, best first. Documents are ranked by their best chunk; the first
    relevant one within the top 10 documents counts (binary relevance, one answer needed)."""
    docs = list(dict.fromkeys(doc_of(c) for c in ranked))[:10]
    rank = next((i + 1 for i, d in enumerate(docs) if d in relevant), None)
    if rank is None:
        return Figures(0.0, 0.0, 0.0, 0.0, 1)
    return Figures(float(rank == 1), float(rank <= 5), 1 / rank, 1 / math.log2(rank + 1), 1)


# --- embeddings, cached on disk: the corpora take ~2 minutes to embed on 2 cores ---


class CachedEmbedder:
    """The local embedder (all-MiniLM-L6-v2, int8 ONNX) with its vectors kept in a SQLite file
    by text hash: the same texts are embedded once per machine."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        self._local = LocalEmbedder()
        self._lock = threading.Lock()
        self.computed = 0

    @property
    def fingerprint(self) -> str:
        return self._local.fingerprint

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_sync, texts)

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        import numpy as np

        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        with self._lock:
            held: dict[str, bytes] = {}
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                rows = self._db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(part))})", part)
                held.update(rows.fetchall())
        missing = [i for i, k in enumerate(keys) if k not in held]
        if missing:
            vectors = self._local.embed_sync([texts[i] for i in missing])
            fresh = {keys[i]: np.asarray(v, dtype=np.float32).tobytes() for i, v in zip(missing, vectors, strict=True)}
            with self._lock:
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", list(fresh.items()))
                self._db.commit()
            held.update(fresh)
            self.computed += len(missing)
        return [np.frombuffer(held[k], dtype=np.float32).tolist() for k in keys]

