"""Fusion of the vector and the keyword (BM25) rankings into one.

The default is **adaptive score fusion**: each list's scores are scaled to [0, 1] (relative score
fusion) and summed, the vector side weighted by a share that the query sets. Plain questions
lean on the vectors (0.8): their words paraphrase the answer, which BM25 cannot see. Identifier-
like words (``--kill-after``, ``TIME_STYLE``, ``str.removeprefix``, ``ERR-4471``, ``len()``, a
"double-quoted phrase") move the share towards BM25, down to 0.1 for a query made of nothing
else: the embedding model knows such names only by their pieces and confuses near-identical ones
(ERR-4471 and ERR-4417), exact matching does not. A collection's ``hybrid_weight`` sets the share
instead (0 = BM25 alone, 1 = vectors alone).

Measured by bench/rag_quality.py on two real corpora and the RAG tests' own (README, "RAG"):
with a fixed share, reciprocal rank fusion let the weaker side pull answers down (0.5: MRR 0.07
below the vectors alone on the Python reference); the adaptive share is at or above the better
single side on every corpus. ``rrf`` is kept for that comparison."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

RRF_K = 60  # the constant of Cormack et al. (2009); higher flattens the advantage of the top ranks
PLAIN_SHARE = 0.8  # the vector side's share for a query without identifier-like words
IDENTIFIER_SHARE = 0.1  # ... for a query made only of them
_QUOTED = re.compile("[\"\u201c\u201d]([^\"\u201c\u201d]{1,200})[\"\u201c\u201d]")  # "straight" or “curly” double quotes
_MARKS = re.compile(r"[_=/:#@$\\<>{}\[\]]|\w\w\.\w|\w\.\w\w|\(\)|[a-z][A-Z]|[A-Z][A-Z]|^-{1,2}\w")
_EDGES = "?!,.;:'\u2019\""


@dataclass(frozen=True, slots=True)
class Fused:
    id: str
    score: float  # 1.0: first in every ranking that counts (weight > 0)
    similarity: float | None
    keyword_rank: int | None  # 1-based


def identifier_like(word: str) -> bool:
    """A name as code or configuration spells it, not a word of prose: it holds a connector (_ = /
    : # and the like, a dot inside a name but not "e.g", ``()``), mixes case inside (``getAttr``, ``HTTP``),
    starts like an option (``-v``, ``--all``), or mixes letters and digits (``ed25519``)."""
    if _MARKS.search(word):
        return True
    return any(c.isdigit() for c in word) and any(c.isalpha() for c in word)


def vector_share(query: str) -> float:
    """The vector side's share in the fused score for ``query``: ``PLAIN_SHARE`` less the part of
    the way to ``IDENTIFIER_SHARE`` that identifier-like words (and the words of double-quoted
    phrases) make up of the query's words."""
    quoted = sum(len(phrase.split()) for phrase in _QUOTED.findall(query))
    words = [w for w in (t.strip(_EDGES) for t in _QUOTED.sub(" ", query).split()) if w]
    total = len(words) + quoted
    if not total:
        return PLAIN_SHARE
    share = (sum(identifier_like(w) for w in words) + quoted) / total
    return PLAIN_SHARE - (PLAIN_SHARE - IDENTIFIER_SHARE) * share


def _scaled(scored: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Scores scaled to [0, 1] within their list (a list of equal scores: all 1)."""
    if not scored:
        return {}
    values = [s for _, s in scored]
    low, span = min(values), max(values) - min(values)
    if not span:
        return {id_: 1.0 for id_, _ in scored}
    return {id_: (s - low) / span for id_, s in scored}


def scored(vector: Sequence[tuple[str, float]], keyword: Sequence[tuple[str, float]], *, weight: float) -> list[Fused]:
    """Relative score fusion: ``vector`` (id, cosine similarity) and ``keyword`` (id, BM25 score),
    each best first, scaled to [0, 1] within their list and summed with ``weight`` for the vector
    side. Ties go to the id (a stable order)."""
    near, words = (_scaled(vector) if weight > 0 else {}), (_scaled(keyword) if weight < 1 else {})
    similarity = dict(vector)
    ranks = {id_: rank + 1 for rank, (id_, _) in enumerate(keyword)}
    scores = {i: weight * near.get(i, 0.0) + (1 - weight) * words.get(i, 0.0) for i in (*near, *words)}
    order = sorted(scores, key=lambda i: (-scores[i], i))
    return [Fused(i, scores[i], similarity.get(i) if weight > 0 else None, ranks.get(i) if weight < 1 else None)
            for i in order]  # fmt: skip


def rrf(
    vector: Sequence[tuple[str, float]], keyword: Sequence[tuple[str, float]], *, weight: float, k: int = RRF_K
) -> list[Fused]:
    """Weighted reciprocal rank fusion (the default before adaptive fusion; for comparison). Exact
    ties are broken by the weighted sum of the scaled scores, so the list with the wider margin decides."""
    scores: dict[str, float] = {}
    similarity = dict(vector)
    ranks: dict[str, int] = {}
    if weight > 0:
        for rank, (id_, _) in enumerate(vector):
            scores[id_] = scores.get(id_, 0.0) + weight / (k + rank + 1)
    if weight < 1:
        for rank, (id_, _) in enumerate(keyword):
            scores[id_] = scores.get(id_, 0.0) + (1 - weight) / (k + rank + 1)
            ranks[id_] = rank + 1
    near, words = _scaled(vector), _scaled(keyword)
    margin = {i: weight * near.get(i, 0.0) + (1 - weight) * words.get(i, 0.0) for i in scores}
    best = 1 / (k + 1)  # the score of an id ranked first everywhere, with weights summing to 1
    order = sorted(scores, key=lambda i: (-round(scores[i], 12), -margin[i], i))
    return [Fused(i, scores[i] / best, similarity.get(i) if weight > 0 else None, ranks.get(i)) for i in order]


def fuse(
    vector: Sequence[tuple[str, float]], keyword: Sequence[tuple[str, float]], *, query: str, weight: float | None
) -> list[Fused]:
    """The ranking a collection answers with: score fusion, the vector side's share ``weight``
    (the collection's ``hybrid_weight``) or, unset, the query's own (``vector_share``)."""
    return scored(vector, keyword, weight=vector_share(query) if weight is None else weight)


Method = Callable[[Sequence[tuple[str, float]], Sequence[tuple[str, float]], str], list[Fused]]

#: The fusion methods the evaluation harness compares (bench/rag_quality.py), the default last.
METHODS: dict[str, Method] = {
    "RRF, share 0.5 (old default)": lambda v, w, q: rrf(v, w, weight=0.5),
    "RRF, share 0.8": lambda v, w, q: rrf(v, w, weight=PLAIN_SHARE),
    "RRF, adaptive share": lambda v, w, q: rrf(v, w, weight=vector_share(q)),
    "score fusion, share 0.5": lambda v, w, q: scored(v, w, weight=0.5),
    "score fusion, share 0.8": lambda v, w, q: scored(v, w, weight=PLAIN_SHARE),
    "adaptive (the default)": lambda v, w, q: fuse(v, w, query=q, weight=None),
}
