"""The reranker's pure parts: what it reads of a product, and how training groups are drawn."""

from __future__ import annotations

import numpy as np
import pytest

from prism.models.reranker import RerankerConfig, passage
from prism.training.rerank_fit import Candidates, RerankTrainConfig, _groups, epochs_without_gain

pytestmark = pytest.mark.unit


def test_passage_puts_attributes_first_and_skips_identifiers() -> None:
    text = passage(
        "Poodle",
        {"type": "Dress", "colour": "Blue", "product_code": "0123456", "year": "2012", "colour_detail": "Dark Blue"},
    )
    assert text == "type: Dress; colour: Blue; colour detail: Dark Blue; Poodle"
    assert passage("", {}) == ""  # a photo-only product: the photo token carries it
    assert passage("  Poodle ", None) == "Poodle"


def test_config_round_trips_and_ignores_unknown_keys() -> None:
    cfg = RerankerConfig(layers=1, image_dim=0)
    assert RerankerConfig.from_json({**cfg.to_json(), "future_field": 3}) == cfg


def _candidates() -> Candidates:
    ids = [f"p{i}" for i in range(12)]
    rels = [{"p0": 2, "p1": 2, "p2": 1, "p3": 1}, {"p11": 2}, {"p5": 1}]
    order = np.asarray([list(range(10)), list(range(10)), list(range(10))], dtype=np.int64)
    return Candidates(
        name="c",
        mode="none",
        queries=["blue dress", "red shoes", "black bag"],
        rels=rels,
        order=order,
        ids=ids,
        passages=[""] * 12,
        image=np.zeros((12, 4), dtype=np.float32),
    )


def test_groups_hold_one_exact_match_and_mined_negatives() -> None:
    cfg = RerankTrainConfig(group=5, groups_per_query=3)
    c = _candidates()
    groups = _groups([c], cfg, np.random.default_rng(0))
    # query 2 has no exact (grade 2) match: it teaches nothing listwise and is skipped
    assert {qi for _, qi, _ in groups} == {0, 1}
    for _, qi, rows in groups:
        assert len(rows) == 5 and len(set(rows)) == 5
        assert c.rels[qi].get(c.ids[rows[0]], 0) == 2  # the first row is the exact match
        assert all(r in c.order[qi] for r in rows[1:])  # the others come from the mined head
    # query 1's only exact match is outside the first stage's head: it is brought in
    assert any(qi == 1 and rows[0] == 11 for _, qi, rows in groups)


def test_groups_are_repeatable_for_a_seed() -> None:
    cfg = RerankTrainConfig(group=4)
    a = _groups([_candidates()], cfg, np.random.default_rng(5))
    b = _groups([_candidates()], cfg, np.random.default_rng(5))
    assert a == b


def test_first_stage_ndcg_needs_no_model() -> None:
    from prism.evaluation import ndcg_at_k
    from prism.training.rerank_fit import first_stage_ndcg

    c = _candidates()
    [(key, got)] = first_stage_ndcg([c], max_queries=10).items()
    expected = np.mean([ndcg_at_k([c.ids[j] for j in c.order[qi]], c.rels[qi], 10) for qi in range(3)])
    assert key == "c/none" and got == {"queries": 3.0, "first_stage": pytest.approx(expected)}
    assert first_stage_ndcg([c], max_queries=1)["c/none"]["queries"] == 1.0


def test_old_configs_load_without_the_rank_prior() -> None:
    # reranker.json files written before the prior existed describe a model without it
    old = {k: v for k, v in RerankerConfig().to_json().items() if k != "rank_prior"}
    assert RerankerConfig.from_json(old).rank_prior is False
    assert RerankerConfig.from_json(RerankerConfig().to_json()).rank_prior is True


def _tiny_cross_encoder(rank_prior: bool) -> tuple[object, RerankerConfig]:
    import torch
    from transformers import BertConfig, BertModel

    from prism.models.reranker import build_cross_encoder

    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
        add_pooling_layer=False,
    )
    cfg = RerankerConfig(image_dim=4, rank_prior=rank_prior)
    model = build_cross_encoder(bert, cfg)
    model.eval()  # no dropout: scores are compared exactly
    return model, cfg


def test_a_fresh_model_with_the_rank_prior_keeps_the_first_stage_order() -> None:
    import torch

    model, _ = _tiny_cross_encoder(rank_prior=True)
    ids = torch.randint(5, 50, (6, 9))
    mask = torch.ones_like(ids)
    image = torch.randn(6, 4)
    has = torch.tensor([True, False, True, True, False, True])
    with torch.inference_mode():
        scores = model(ids, mask, image, has, torch.arange(6, dtype=torch.float32))  # type: ignore[operator]
        shuffled = model(ids, mask, image, has, torch.tensor([5.0, 4, 3, 2, 1, 0]))  # type: ignore[operator]
    # untrained: the text head is zero, so the order is the first stage's whatever the pair says
    assert torch.all(scores[:-1] > scores[1:])
    assert torch.all(shuffled[:-1] < shuffled[1:])
    # the text head learns the correction: once it is non-zero the pair's content moves the score
    with torch.no_grad():
        model.score.weight.normal_()  # type: ignore[attr-defined]
        moved = model(ids, mask, image, has, torch.arange(6, dtype=torch.float32))  # type: ignore[operator]
    assert not torch.allclose(moved - moved[0], scores - scores[0])


def test_without_the_prior_the_rank_is_ignored() -> None:
    import torch

    model, _ = _tiny_cross_encoder(rank_prior=False)
    ids = torch.randint(5, 50, (3, 7))
    args = (ids, torch.ones_like(ids), torch.randn(3, 4), torch.ones(3, dtype=torch.bool))
    with torch.inference_mode():
        a = model(*args, torch.arange(3, dtype=torch.float32))  # type: ignore[operator]
        b = model(*args, torch.tensor([9.0, 0, 4]))  # type: ignore[operator]
    assert torch.equal(a, b)


def test_auto_reranks_only_the_validated_languages() -> None:
    from prism.models.reranker import Reranker

    model, cfg = _tiny_cross_encoder(rank_prior=True)
    tokens = object()  # serves_language reads the report only
    scoped = Reranker(model, tokens, cfg, {"enabled_by_default": True, "languages": ["en"]})  # type: ignore[arg-type]
    assert scoped.serves_language("en") and not scoped.serves_language("zh") and not scoped.serves_language("mixed")
    legacy = Reranker(model, tokens, cfg, {"enabled_by_default": True})  # type: ignore[arg-type]
    assert legacy.serves_language("zh")  # a report naming no languages was validated on whatever came


def test_an_epoch_holds_at_most_max_groups() -> None:
    every = _groups([_candidates()], RerankTrainConfig(group=4, groups_per_query=5), np.random.default_rng(1))
    capped = _groups(
        [_candidates()], RerankTrainConfig(group=4, groups_per_query=5, max_groups=3), np.random.default_rng(1)
    )
    assert len(every) > 3 and len(capped) == 3 and all(g in every for g in capped)


def test_epochs_without_gain_counts_from_the_last_improvement() -> None:
    assert epochs_without_gain(0.8, []) == 0
    assert epochs_without_gain(0.8, [0.79, 0.80]) == 2  # a tie is no gain
    assert epochs_without_gain(0.8, [0.81, 0.79]) == 1
    assert epochs_without_gain(0.8, [0.79, 0.82, 0.83]) == 0
