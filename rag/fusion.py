"""Reciprocal rank fusion of the vector and the keyword (BM25) rankings.

Rank fusion alone cannot tell apart a chunk ranked (1st, 2nd) from one ranked (2nd, 1st): the
common case of an exact identifier ("ERR-4471") that the vector model confuses with a similar
one. Ties are broken by the weighted sum of each list's scores scaled to [0, 1] (relative score
fusion), so the list with the wider margin decides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RRF_K = 60  # the constant of Cormack et al. (2009); higher flattens the advantage of the top ranks


@dataclass(frozen=True, slots=True)
class Fused:
    id: str
    score: float  # 1.0: first in every ranking that counts (weight > 0)
    similarity: float | None
    keyword_rank: int | None  # 1-based


def _scaled(scored: Sequence[tuple[str, float]]) -> dict[str, float]:
    if not scored:
        return {}
    values = [s for _, s in scored]
    low, span = min(values), (max(values) - min(values)) or 1.0
    return {id_: (s - low) / span for id_, s in scored}


def fuse(
    vector: Sequence[tuple[str, float]], keyword: Sequence[tuple[str, float]], *, weight: float, k: int = RRF_K
) -> list[Fused]:
    """``vector``: (id, cosine similarity) and ``keyword``: (id, BM25 score), each best first.
    ``weight`` is the vector ranking's share (1 = vector only, 0 = keyword only)."""
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
