import math

import pytest

from prism.evaluation import dcg, ndcg_at_k, recall_at_k, reciprocal_rank

pytestmark = pytest.mark.unit


def test_ndcg_perfect_and_empty() -> None:
    rel = {"a": 2, "b": 1}
    assert ndcg_at_k(["a", "b", "c"], rel) == pytest.approx(1.0)
    assert ndcg_at_k(["c", "d"], rel) == 0.0
    assert ndcg_at_k(["a"], {}) == 0.0


def test_ndcg_uses_exponential_gain_and_all_graded_for_ideal() -> None:
    rel = {"a": 2, "b": 1}
    got = ndcg_at_k(["b", "a"], rel)
    ideal = 3 / math.log2(2) + 1 / math.log2(3)
    assert got == pytest.approx((1 / math.log2(2) + 3 / math.log2(3)) / ideal)
    # the ideal counts graded products that were never retrieved
    assert ndcg_at_k(["a"], {"a": 2, "z": 2}) == pytest.approx(3 / (3 + 3 / math.log2(3)))


def test_recall_counts_only_exact_matches_out_of_min_k() -> None:
    rel = {"a": 2, "b": 2, "c": 2, "d": 1}
    assert recall_at_k(["a", "x"], rel, 1) == 1.0
    assert recall_at_k(["d", "a"], rel, 1) == 0.0
    assert recall_at_k(["a", "b", "d"], rel, 10) == pytest.approx(2 / 3)
    assert recall_at_k(["a"], {"d": 1}, 10) == 0.0


def test_mrr_first_exact_hit() -> None:
    assert reciprocal_rank(["x", "y", "a"], {"a": 2, "x": 1}) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x"], {"a": 2}) == 0.0
    assert dcg([]) == 0.0


def test_context_queries_hold_out_viewed_matches() -> None:
    from prism.catalog import Query
    from prism.evaluation import context_queries

    qs = [
        Query(qid="text-en-0001", text="blue", relevant={"a": 2, "b": 2, "c": 2, "d": 1}),
        Query(qid="text-en-0002", text="red", relevant={"a": 2, "d": 1}),  # too few exact matches
        Query(qid="image-0001", relevant={"a": 2, "b": 2, "c": 2}),  # not a text query
    ]
    [(q, viewed)] = context_queries(qs, 2)
    assert q.qid == "text-en-0001" and len(viewed) == 2 and set(viewed) <= {"a", "b", "c"}
    assert not set(viewed) & set(q.relevant) and q.relevant["d"] == 1
    assert context_queries(qs, 2) == [(q, viewed)]  # deterministic
