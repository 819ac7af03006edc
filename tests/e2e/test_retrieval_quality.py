"""End to end: a real 300-product catalog slice through ingestion, queries through the HTTP API."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from prism.catalog import Query, read_queries
from prism.evaluation import ndcg_at_k, recall_at_k, run_query

pytestmark = pytest.mark.e2e


def _slice_queries(shared_data: Path, myntra_slice: Path, kinds: set[str]) -> list[Query]:
    ids = {json.loads(line)["id"] for line in (myntra_slice / "products.jsonl").read_text().splitlines()}
    out = []
    for q in read_queries(shared_data / "catalogs" / "myntra-queries.jsonl"):
        if q.kind not in kinds:
            continue
        rel = {pid: g for pid, g in q.relevant.items() if pid in ids}
        if any(g >= 2 for g in rel.values()):
            out.append(Query(qid=q.qid, relevant=rel, text=q.text, image=q.image, similar_to=q.similar_to))
    return out


def test_photo_queries_find_their_product(indexed_suite: Any, shared_data: Path, myntra_slice: Path) -> None:
    queries = _slice_queries(shared_data, myntra_slice, {"image", "image-aug"})
    assert len(queries) >= 10, "the slice should contain products with photo queries"
    with httpx.Client(base_url=indexed_suite.url, timeout=60) as client:
        outcomes = [run_query(client, q) for q in queries]
    assert not [o.error for o in outcomes if o.error]
    r10 = np.mean([recall_at_k(o.ranked, q.relevant, 10) for o, q in zip(outcomes, queries, strict=True)])
    r1 = np.mean([recall_at_k(o.ranked, q.relevant, 1) for o, q in zip(outcomes, queries, strict=True)])
    assert r10 >= 0.9, f"photo Recall@10 {r10:.2f} over {len(queries)} queries"
    assert r1 >= 0.75, f"photo Recall@1 {r1:.2f}"


def test_text_queries_beat_random_by_a_wide_margin(indexed_suite: Any, shared_data: Path, myntra_slice: Path) -> None:
    queries = _slice_queries(shared_data, myntra_slice, {"text-en"})
    assert len(queries) >= 20
    ids = [json.loads(line)["id"] for line in (myntra_slice / "products.jsonl").read_text().splitlines()]
    with httpx.Client(base_url=indexed_suite.url, timeout=60) as client:
        outcomes = [run_query(client, q) for q in queries]
    ours = float(np.mean([ndcg_at_k(o.ranked, q.relevant) for o, q in zip(outcomes, queries, strict=True)]))
    rng = random.Random(0)
    rand = float(np.mean([ndcg_at_k(rng.sample(ids, 10), q.relevant) for q in queries for _ in range(20)]))
    assert ours >= 0.5 and ours >= 4 * rand, f"text nDCG@10 {ours:.3f} vs random {rand:.3f}"
