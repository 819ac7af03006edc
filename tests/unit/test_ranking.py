import pytest

from prism.index import ScoredProduct
from services.gateway.ranking import weighted_rrf

pytestmark = pytest.mark.unit


def _list(*ids: str) -> list[ScoredProduct]:
    return [ScoredProduct(product_id=i, score=1.0 - n / 10, payload={"title": i}) for n, i in enumerate(ids)]


def test_rrf_rewards_agreement_and_keeps_order_stable() -> None:
    fused = weighted_rrf({"text": _list("a", "b", "c"), "lexical": _list("b", "d")}, {"text": 1.0, "lexical": 1.0})
    assert [f.product.product_id for f in fused] == ["b", "a", "d", "c"]
    assert fused[0].matched == "lexical"  # rank 1 there, rank 2 in text
    assert fused[0].product.score == pytest.approx(1 / 62 + 1 / 61)
    # equal scores break ties by id: the same input always gives the same page
    tie = weighted_rrf({"x": _list("z"), "y": _list("m")}, {"x": 1.0, "y": 1.0})
    assert [f.product.product_id for f in tie] == ["m", "z"]


def test_rrf_weights_and_disabled_lists() -> None:
    lists = {"text": _list("a", "b"), "lexical": _list("b", "a")}
    assert weighted_rrf(lists, {"text": 2.0, "lexical": 1.0})[0].product.product_id == "a"
    assert weighted_rrf(lists, {"text": 1.0, "lexical": 2.0})[0].product.product_id == "b"
    only_text = weighted_rrf(lists, {"text": 1.0, "lexical": 0.0})
    assert [f.matched for f in only_text] == ["text", "text"]
    assert weighted_rrf({}, {}) == []
