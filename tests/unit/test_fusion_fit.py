"""The pieces ``prism train`` chooses the fusion and the hybrid weights with."""

from __future__ import annotations

import numpy as np
import pytest

from prism.catalog import Product, Query
from prism.evaluation import restrict_queries
from prism.training.fusion_fit import FusionSet, bm25_scores, fit_length_gate, fit_mix, halves, rrf_ndcg


def test_bm25_scores_rank_the_matching_product_first() -> None:
    products = [
        Product(id="a", title="Blue denim jacket"),
        Product(id="b", title="Red dress"),
        Product(id="c", title="Blue dress with pockets"),
    ]
    s = bm25_scores(products, ["blue dress", "jacket"])
    assert s.shape == (2, 3)
    assert int(np.argmax(s[0])) == 2 and s[1, 0] > 0 and s[1, 1] == 0 == s[1, 2]


def test_rrf_ndcg_combines_lists_and_ignores_lexical_misses() -> None:
    ids = ["a", "b", "c"]
    rels = [{"c": 2}]
    dense = np.array([[0.9, 0.8, 0.1]], dtype=np.float32)  # c last
    lexical = np.array([[0.0, 0.0, 3.0]], dtype=np.float32)  # only c matches
    assert rrf_ndcg({"shared": dense}, {"shared": 1.0}, ids, rels) == pytest.approx(0.5)
    assert rrf_ndcg({"shared": dense, "lexical": lexical}, {"shared": 1.0, "lexical": 2.0}, ids, rels) == 1.0


def test_halves_keep_groups_whole() -> None:
    groups = [f"g{i // 3}" for i in range(300)]
    a = halves(groups, seed=1)
    for g in set(groups):
        rows = [i for i, x in enumerate(groups) if x == g]
        assert len({bool(a[i]) for i in rows}) == 1
    assert 0.3 < a.mean() < 0.7


def _set(rng: np.random.Generator, n: int = 120) -> FusionSet:
    """Phrase k's products: a long text that says the phrase, a title that does not, and a noisy photo."""
    d, k = 16, 6
    phrases = rng.normal(size=(k, d)).astype(np.float32)
    phrases /= np.linalg.norm(phrases, axis=1, keepdims=True)
    labels = np.arange(n) % k

    def noisy(scale: float) -> np.ndarray:
        v = phrases[labels] + scale * rng.normal(size=(n, d)).astype(np.float32)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    title = rng.normal(size=(n, d)).astype(np.float32)
    title /= np.linalg.norm(title, axis=1, keepdims=True)
    products = [Product(id=f"p{i}", title="t", description="x" * 600) for i in range(n)]
    return FusionSet(
        name="synthetic",
        ids=[p.id for p in products],
        groups=[p.id for p in products],
        phrases=[f"phrase {lab}" for lab in labels],
        types=[f"type {lab % 2}" for lab in labels],
        text={"full": noisy(0.3), "title": title},
        image=noisy(1.0),
        native=noisy(2.0),
        phrase_list=[f"phrase {i}" for i in range(k)],
        phrase_vectors=phrases,
        products=products,
    )


def test_length_gate_trusts_long_text_and_photos_over_uninformative_titles() -> None:
    s = _set(np.random.default_rng(0))
    gate, score = fit_length_gate([s], ("none", "title-photo"))
    # the full text is informative, the (random) title is not: text weight high when long, low when short
    assert gate.text_long >= 0.6 and gate.text_long - gate.text_short >= 0.2, gate
    _, by_weight = fit_mix([s], ("none", "title-photo"))
    assert score >= max(by_weight.values()) - 1e-9


def test_restrict_queries_keeps_relevance_inside_the_subset() -> None:
    qs = [
        Query(qid="text-en-0001", text="blue", relevant={"a": 2, "b": 1}),
        Query(qid="text-en-0002", text="red", relevant={"c": 2, "a": 1}),
        Query(qid="similar-0001", similar_to="c", relevant={"a": 2}),
        Query(qid="similar-0002", similar_to="a", relevant={"b": 2}),
    ]
    got = restrict_queries(qs, {"a", "b"})
    assert [q.qid for q in got] == ["text-en-0001", "similar-0002"]
    assert got[0].relevant == {"a": 2, "b": 1}


def test_fit_fusion_fits_what_the_index_will_hold() -> None:
    from prism.training.fusion_fit import fit_fusion

    sets = [_set(np.random.default_rng(1), n=160)]
    full = fit_fusion(sets, seed=0, modes=("none",))
    assert full.report["modes"] == ["none"] and full.fuser.kind in ("length-gate", "learned-mix")
    assert set(full.retrieval.weights) == {"shared", "text", "lexical"}
    assert full.retrieval.similar and sum(full.retrieval.similar.values()) > 0
    photo = fit_fusion(sets, seed=0, modes=("photo",))
    # nothing textual to weigh: text queries search the shared vector alone
    assert dict(photo.retrieval.weights) == {"shared": 1.0} and "gate" not in photo.report
    with pytest.raises(ValueError, match="unknown strip modes"):
        fit_fusion(sets, seed=0, modes=("everything",))


def _attributed(rng: np.random.Generator, n: int = 120) -> FusionSet:
    """Products whose attributes say their colour and type (what "similar" grades by), a code per
    product, and a meaningless flag; their photo vectors carry the phrase only faintly."""
    s = _set(rng, n)
    colours, kinds = ["red", "blue", "green"], ["dress", "shirt"]
    products = []
    for i, p in enumerate(s.products):
        lab = i % 6
        attrs = {
            "colour": colours[lab % 3],
            "type": kinds[lab // 3],
            "product_code": f"{i:04d}",
            "flag": "yes" if rng.random() < 0.5 else "no",
        }
        # a description of words that say nothing of the kind (so "more like this" is no oracle)
        words = " ".join(f"w{int(j)}" for j in rng.integers(0, 40, size=40))
        products.append(Product(id=p.id, title=p.title, description=words, attributes=attrs))
    phrases = [f"{pr.attributes['colour']} {pr.attributes['type']}" for pr in products]
    types = [pr.attributes["type"] for pr in products]
    return FusionSet(
        name=s.name,
        ids=s.ids,
        groups=s.groups,
        phrases=phrases,
        types=types,
        text=s.text,
        image=s.image,
        native=s.native,
        phrase_list=sorted(set(phrases)),
        phrase_vectors=s.phrase_vectors,
        products=products,
    )


def test_similar_products_learn_attribute_boosts_where_the_index_holds_attributes() -> None:
    from prism.fusers import FixedMix
    from prism.training.fusion_fit import fit_similar, similar_attribute_keys, similar_ndcg

    s = _attributed(np.random.default_rng(2))
    fuser = FixedMix({"text": 0.5, "image": 0.5}, kind="equal")
    # codes (one per product, the variant group) are not a kind of product
    assert similar_attribute_keys([s]) == ["colour", "flag", "type"]
    weights, scores = fit_similar([s], fuser, ("none",))
    assert weights.get("attribute:colour", 0) > 0 and weights.get("attribute:type", 0) > 0, weights
    assert "attribute:product_code" not in weights
    vectors_only = {k: v for k, v in weights.items() if not k.startswith("attribute:")}
    with_boosts = similar_ndcg(s, fuser, "none", weights)
    assert with_boosts == pytest.approx(max(scores.values()))
    assert with_boosts > similar_ndcg(s, fuser, "none", vectors_only) + 0.05
    # a photo-only index holds no attributes: nothing to boost
    photo_weights, _ = fit_similar([s], fuser, ("photo",))
    assert not any(k.startswith("attribute:") for k in photo_weights)


def test_narrowed_keeps_the_request_filter_and_adds_the_boosted_values() -> None:
    from qdrant_client import models as qm

    from prism.index import build_filter, narrowed

    base = build_filter({"season": ["Summer"]}, exclude_ids=["p1"])
    assert base is not None and isinstance(base.must, list)
    scope = narrowed(base, {"type": "Dress", "colour": "Red"})
    assert scope.must_not == base.must_not  # the product itself stays out
    assert isinstance(scope.must, list) and scope.must[0] == base.must[0]  # the request's own filter holds
    assert [(c.key, c.match) for c in scope.must[1:] if isinstance(c, qm.FieldCondition)] == [
        ("attributes.colour", qm.MatchValue(value="Red")),
        ("attributes.type", qm.MatchValue(value="Dress")),
    ]
    only = narrowed(None, {"colour": "Red"})
    assert only.must_not is None and isinstance(only.must, list) and len(only.must) == 1
    with pytest.raises(Exception, match="unknown filter field"):
        narrowed(None, {"bad field!": "x"})


def test_attribute_boosts_name_the_payload_field_they_read() -> None:
    from prism.fusers import attribute_boosts

    similar = {"shared": 1.0, "attribute:type": 1.0, "predicted:colour": 0.5, "attribute:flag": 0.0}
    assert attribute_boosts(similar) == {("attributes", "type"): 1.0, ("predicted", "colour"): 0.5}


def test_similar_products_learn_predicted_boosts_where_the_index_holds_only_photos() -> None:
    """A photo-only index has no attributes; the tagger's predictions (here: right for 5 products in 6)
    are what "similar" can favour, and the fit picks them where they help."""
    from dataclasses import replace

    from prism.fusers import FixedMix
    from prism.training.fusion_fit import fit_similar, similar_ndcg

    rng = np.random.default_rng(3)
    s = _attributed(rng)
    noisy = {
        key: [p.attributes[key] if rng.random() < 5 / 6 else "wrong" for p in s.products] for key in ("type", "colour")
    }
    s = replace(s, predicted=noisy)
    fuser = FixedMix({"text": 0.5, "image": 0.5}, kind="equal")
    weights, _ = fit_similar([s], fuser, ("photo",))
    assert weights.get("predicted:type", 0) > 0 and weights.get("predicted:colour", 0) > 0, weights
    assert not any(k.startswith("attribute:") for k in weights)
    vectors_only = {k: v for k, v in weights.items() if not k.startswith("predicted:")}
    assert similar_ndcg(s, fuser, "photo", weights) > similar_ndcg(s, fuser, "photo", vectors_only) + 0.05
    # where the index holds the declared attributes, the predictions are not offered at all
    full_weights, _ = fit_similar([s], fuser, ("none",))
    assert not any(k.startswith("predicted:") for k in full_weights)
    assert any(k.startswith("attribute:") for k in full_weights)
    # the rows of a set keep their own predictions
    half = s.rows(np.arange(len(s.ids)) % 2 == 0)
    assert half.predicted["type"] == noisy["type"][::2]
