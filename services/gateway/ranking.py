"""Combining ranked lists: dense text, lexical (BM25) and image similarity into one ranking."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prism.index import ScoredProduct


@dataclass(frozen=True)
class Fused:
    product: ScoredProduct  # payload of the product; ``score`` is the fused score
    matched: str  # the list that contributed most to the fused score


def weighted_rrf(
    lists: Mapping[str, Sequence[ScoredProduct]], weights: Mapping[str, float], k: int = 60
) -> list[Fused]:
    """Weighted reciprocal-rank fusion: score = sum over lists of weight / (k + rank).

    Ranks, not raw scores, are combined: cosine similarities and BM25 scores live on scales that
    do not compare, and RRF needs no per-query calibration.  Ties break by product id so the
    ranking (and so pagination) is stable.
    """
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    payloads: dict[str, ScoredProduct] = {}
    for name, found in lists.items():
        w = float(weights.get(name, 0.0))
        if w <= 0:
            continue
        for rank, s in enumerate(found, start=1):
            contribution = w / (k + rank)
            scores[s.product_id] = scores.get(s.product_id, 0.0) + contribution
            payloads.setdefault(s.product_id, s)
            if contribution > best.get(s.product_id, (0.0, ""))[0]:
                best[s.product_id] = (contribution, name)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [
        Fused(ScoredProduct(product_id=pid, score=score, payload=payloads[pid].payload), best[pid][1])
        for pid, score in ranked
    ]
