"""Training the reranker (:mod:`prism.models.reranker`) on the catalog's own products.

Queries are the products' "<colour> <type>" phrases (grade 2: same phrase, 1: same type, as in the
query sets); candidates are what the first-stage retriever returns for them -- the same weighted
RRF of the fused ``shared`` vector, dense ``text`` and BM25 that the gateway runs, with the weights
``prism train`` just chose -- so the negatives are the hard ones the reranker will actually see.

Data: the validation products (never seen by the image head, so their projected photos are as
noisy as a new product's), half A to train on and half B to decide with, the same halves as the
fusion weights.  Each strip mode the index may hold (``--fit-strip``) gives its own candidates:
photo-only products teach the photo token.  Loss: listwise softmax cross-entropy against the
graded gains ``2^g - 1`` of a group of candidates.  The model sees each candidate's first-stage
rank (a learned prior, :class:`~prism.models.reranker.RerankerConfig`), so it starts from the
first stage's order and learns what to move.  The kept epoch is the one with the best nDCG@10
on half B (training stops after ``patience`` epochs in a row without a gain), and
``enabled_by_default`` is set only when that beats the first stage there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import structlog

from prism.evaluation import ndcg_at_k
from prism.fusers import Fuser, RetrievalWeights
from prism.models.precision import fast_cpu_precision
from prism.models.reranker import RerankerConfig, new_cross_encoder, passage, trainable_state
from prism.progress import Progress
from prism.training.fusion_fit import MODES, FusionSet, bm25_scores, fused_vectors, halves, rrf_scores

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RerankTrainConfig:
    head: int = 20  # candidates reranked per query (the gateway's default head size)
    group: int = 8  # candidates per training group
    groups_per_query: int = 6  # groups sampled per query and epoch (each with other negatives)
    # An epoch's cap, drawn evenly from every catalog and mode: one catalog in one mode has ~900
    # groups (~1.5 min an epoch on 2 cores); both catalogs in the default two modes would have ~4x.
    max_groups: int = 1200
    epochs: int = 4
    # Stop after this many epochs in a row that do not beat the best so far (epoch 0, the first
    # stage's own order, included): when the first stage is already hard to beat, the later
    # epochs rarely change the verdict and cost most of `prism train`'s time (4 epochs: ~9 min).
    patience: int = 2
    # The training steps' CPU precision ("auto": bf16 where the CPU has it natively, else fp32).
    # fp32 by default: bf16 steps are ~1.6x faster where native and scored better on half B, but
    # on the real H&M queries of unseen products they reranked worse (text-en 0.874 against
    # fp32's 0.886, one run each, 2026-11-27), and the phrase queries of half B are not what
    # shoppers type.  Validation always runs in fp32, as the gateway serves it.
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    lr: float = 3e-4  # the pretrained layers
    lr_new: float = 2e-3  # photo projection and score head
    max_val_queries: int = 120  # per catalog and mode: validation scores every candidate pair
    seed: int = 0


@dataclass
class Candidates:
    """First-stage candidates of each query of one catalog and strip mode."""

    name: str
    mode: str
    queries: list[str]
    rels: list[dict[str, int]]
    order: npt.NDArray[np.int64]  # (queries, head) rows into ``ids``
    ids: list[str]
    passages: list[str]
    image: npt.NDArray[np.float32]  # (products, d) shared-space photos


@dataclass
class RerankFit:
    model: Any
    config: RerankerConfig
    report: dict[str, Any] = field(default_factory=dict)


def candidates(s: FusionSet, fuser: Fuser, retrieval: RetrievalWeights, mode: str, head: int) -> Candidates:
    q, rels, texts = s.queries()
    view = MODES[mode]
    stripped = [p.stripped(mode) for p in s.products]  # type: ignore[arg-type]
    lists = {"shared": q @ fused_vectors(fuser, s, mode).T}
    if view is not None:
        lists["text"] = q @ s.text[view].T
        lists["lexical"] = bm25_scores(stripped, texts)
    weights = {n: w for n, w in retrieval.weights.items() if n in lists} or {"shared": 1.0}
    fused = rrf_scores(lists, weights, retrieval.rrf_k)
    depth = min(head, len(s.ids))
    top = np.argsort(-fused, axis=1, kind="stable")[:, :depth]
    return Candidates(
        name=s.name,
        mode=mode,
        queries=list(texts),
        rels=rels,
        order=top.astype(np.int64),
        ids=list(s.ids),
        passages=[passage(p.title, p.attributes) for p in stripped],
        image=s.image.astype(np.float32),
    )


def _ndcg(order: Sequence[int], ids: Sequence[str], rel: Mapping[str, int]) -> float:
    return ndcg_at_k([ids[j] for j in order], rel, 10)


def _score_rows(model: Any, tokens: Any, c: Candidates, rows: Sequence[int], batch: int = 64) -> list[np.ndarray]:
    import torch

    out: list[np.ndarray] = []
    pairs = [(qi, int(j)) for qi in rows for j in c.order[qi]]
    scores = np.zeros(len(pairs), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(pairs), batch):
            chunk = pairs[start : start + batch]
            ids, mask = tokens.batch([c.queries[qi] for qi, _ in chunk], [c.passages[j] for _, j in chunk])
            img = torch.from_numpy(c.image[[j for _, j in chunk]])
            has = torch.ones(len(chunk), dtype=torch.bool)
            ranks = torch.tensor([float(k % c.order.shape[1]) for k in range(start, start + len(chunk))])
            s = model(torch.from_numpy(ids), torch.from_numpy(mask), img, has, ranks)
            scores[start : start + len(chunk)] = s.float().numpy()
    width = c.order.shape[1]
    for k in range(len(rows)):
        out.append(scores[k * width : (k + 1) * width])
    return out


def _val_rows(c: Candidates, max_queries: int) -> list[int]:
    return [i for i in range(len(c.queries)) if c.rels[i]][:max_queries]


def first_stage_ndcg(sets: Sequence[Candidates], max_queries: int) -> dict[str, dict[str, float]]:
    """nDCG@10 of the first stage alone, per catalog/mode (no model needed)."""
    out: dict[str, dict[str, float]] = {}
    for c in sets:
        rows = _val_rows(c, max_queries)
        if rows:
            base = [_ndcg(c.order[qi], c.ids, c.rels[qi]) for qi in rows]
            out[f"{c.name}/{c.mode}"] = {"queries": float(len(rows)), "first_stage": float(np.mean(base))}
    return out


def evaluate(model: Any, tokens: Any, sets: Sequence[Candidates], max_queries: int) -> dict[str, dict[str, float]]:
    """nDCG@10 of the first stage and of its head reranked, per catalog/mode."""
    model.eval()
    out = first_stage_ndcg(sets, max_queries)
    for c in sets:
        rows = _val_rows(c, max_queries)
        if not rows:
            continue
        scored = _score_rows(model, tokens, c, rows)
        reranked = [
            _ndcg(c.order[qi][np.argsort(-s, kind="stable")], c.ids, c.rels[qi])
            for qi, s in zip(rows, scored, strict=True)
        ]
        out[f"{c.name}/{c.mode}"]["reranked"] = float(np.mean(reranked))
    return out


def epochs_without_gain(baseline: float, scores: Sequence[float]) -> int:
    """How many of the last epochs in a row did not beat the best before them (``baseline``: the
    untrained model's score)."""
    best, since = baseline, 0
    for score in scores:
        if score > best:
            best, since = score, 0
        else:
            since += 1
    return since


def _groups(
    sets: Sequence[Candidates], cfg: RerankTrainConfig, rng: np.random.Generator
) -> list[tuple[int, int, list[int]]]:
    """(set, query, candidate rows) groups: one grade-2 product (from anywhere when the first stage
    missed them all: the reranker must learn to lift it) and the rest from the mined head."""
    out: list[tuple[int, int, list[int]]] = []
    for si, c in enumerate(sets):
        exact = {}
        for qi, rel in enumerate(c.rels):
            exact[qi] = [j for j, pid in enumerate(c.ids) if rel.get(pid, 0) >= 2]
        for qi in range(len(c.queries)):
            if not exact[qi]:
                continue
            head = [int(j) for j in c.order[qi]]
            for _ in range(cfg.groups_per_query):
                pos_in_head = [j for j in head if c.rels[qi].get(c.ids[j], 0) >= 2]
                pos = int(rng.choice(pos_in_head if pos_in_head and rng.random() < 0.7 else exact[qi]))
                others = [j for j in head if j != pos]
                picked = list(rng.choice(others, size=min(cfg.group - 1, len(others)), replace=False))
                grades = {c.rels[qi].get(c.ids[j], 0) for j in [pos, *picked]}
                if len(grades) > 1:
                    out.append((si, qi, [pos, *(int(j) for j in picked)]))
    rng.shuffle(out)
    return out[: cfg.max_groups]


def _snapshot(model: Any) -> dict[str, Any]:
    """A copy of what training changes (not the 250k-row word-embedding table: 370 MB a copy)."""
    return {k: v.clone() for k, v in trainable_state(model).items()}


def train_reranker(
    sets: Sequence[FusionSet],
    fuser: Fuser,
    retrieval: RetrievalWeights,
    modes: Sequence[str],
    cache_dir: Path,
    *,
    config: RerankerConfig | None = None,
    train_config: RerankTrainConfig | None = None,
    show_progress: bool = True,
) -> RerankFit | None:
    import torch

    cfg = train_config or RerankTrainConfig()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    a_sets: list[Candidates] = []
    b_sets: list[Candidates] = []
    for s in sets:
        mask = halves(s.groups, cfg.seed)
        for mode in modes:
            a_sets.append(candidates(s.rows(mask), fuser, retrieval, mode, cfg.head))
            b_sets.append(candidates(s.rows(~mask), fuser, retrieval, mode, cfg.head))
    if not a_sets or not any(len(c.queries) for c in a_sets):
        return None
    dim = int(sets[0].image.shape[1])
    rconf = config or RerankerConfig(image_dim=dim)
    model, tokens = new_cross_encoder(rconf, cache_dir)
    params_new = [p for n, p in model.named_parameters() if not n.startswith("bert.") and p.requires_grad]
    params_old = [p for n, p in model.named_parameters() if n.startswith("bert.") and p.requires_grad]
    opt = torch.optim.AdamW([{"params": params_old, "lr": cfg.lr}, {"params": params_new, "lr": cfg.lr_new}])
    t0 = time.perf_counter()
    history: list[dict[str, Any]] = []
    base_val = first_stage_ndcg(b_sets, cfg.max_val_queries)  # what reranking has to beat
    best_val = base_val
    # Epoch 0 is the untrained model: with the rank prior, the first stage's own order.  Kept when
    # no epoch beats it, so a request that forces the reranker on gets no worse than the first stage.
    best_state = _snapshot(model)
    best_score = float(np.mean([v["first_stage"] for v in base_val.values()])) if base_val else 0.0
    first_stage = best_score
    best_epoch = 0
    precision = fast_cpu_precision() if cfg.precision == "auto" else cfg.precision
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        groups = _groups(a_sets, cfg, rng)
        progress = Progress(f"reranker epoch {epoch}", len(groups), enabled=show_progress)
        losses: list[float] = []
        for start in range(0, len(groups), 4):  # 4 groups (~32 pairs) a step
            batch = groups[start : start + 4]
            queries, passages, images, targets, sizes, ranks = [], [], [], [], [], []
            for si, qi, rows in batch:
                c = a_sets[si]
                place = {int(j): k for k, j in enumerate(c.order[qi])}
                ranks += [float(place.get(j, cfg.head)) for j in rows]  # from outside the head: last
                queries += [c.queries[qi]] * len(rows)
                passages += [c.passages[j] for j in rows]
                images.append(c.image[rows])
                gains = np.asarray([2.0 ** c.rels[qi].get(c.ids[j], 0) - 1.0 for j in rows], dtype=np.float32)
                targets.append(gains / gains.sum())
                sizes.append(len(rows))
            tok_ids, tok_mask = tokens.batch(queries, passages)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                scores = model(
                    torch.from_numpy(tok_ids),
                    torch.from_numpy(tok_mask),
                    torch.from_numpy(np.concatenate(images)),
                    torch.ones(len(queries), dtype=torch.bool),
                    torch.tensor(ranks),
                ).float()
            loss = torch.zeros(())
            for part, target in zip(torch.split(scores, sizes), targets, strict=True):
                loss = loss - (torch.from_numpy(target) * torch.log_softmax(part, dim=0)).sum()
            loss = loss / len(batch)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            losses.append(float(loss.detach()))
            progress.update(len(batch))
        progress.close()
        val = evaluate(model, tokens, b_sets, cfg.max_val_queries)
        score = float(np.mean([v["reranked"] for v in val.values()])) if val else 0.0
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else 0.0, "val_ndcg@10": score})
        log.info("train.reranker_epoch", epoch=epoch, loss=round(history[-1]["loss"], 4), val_ndcg10=round(score, 4))
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = _snapshot(model)
            best_val = val
        stalled = epochs_without_gain(first_stage, [h["val_ndcg@10"] for h in history])
        if 0 < cfg.patience <= stalled and epoch < cfg.epochs:
            log.info("train.reranker_stopped", epoch=epoch, epochs_without_gain=stalled)
            break
    model.load_state_dict(best_state, strict=False)  # the frozen word embeddings are not in it
    model.eval()
    gain = best_score - first_stage
    report: dict[str, Any] = {
        "trained_on": "validation products, half A (queries: '<colour> <type>' phrases; candidates: first stage)",
        "modes": list(modes),
        "kept_epoch": best_epoch,
        "epochs_run": len(history),
        "precision": precision,
        "history": history,
        "validation": {k: {m: round(x, 4) for m, x in v.items()} for k, v in best_val.items()},
        "val_first_stage_ndcg@10": round(first_stage, 4),
        "val_reranked_ndcg@10": round(best_score, 4),
        # on only when it beat the first stage on products it was not trained on
        "enabled_by_default": best_epoch > 0 and gain > 0.0,
        # the validation queries are the products' English phrases: the verdict holds for English
        "languages": ["en"],
        "head": cfg.head,
        "train_config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    log.info(
        "train.reranker",
        first_stage=round(first_stage, 4),
        reranked=round(best_score, 4),
        kept_epoch=best_epoch,
        enabled_by_default=report["enabled_by_default"],
    )
    return RerankFit(model=model, config=rconf, report=report)
