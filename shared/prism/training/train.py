"""``prism train``: learn the image projection head on the catalogs' own (photo, text) pairs.

Data: every product with a readable photo.  Products are split by *group* (colour variants share
one, see :func:`prism.training.features.product_group`): a held-out fraction of the groups is kept
for validation, so the model is never scored on a colour variant of something it trained on.

Loss (all multi-positive InfoNCE, :func:`multi_positive_infonce`; positives of a product are the
products sharing its attribute phrase ``"<colour> <type>"``, or only itself when it has none):

* photo <-> full product text, symmetric, over the batch;
* photo -> every attribute phrase of the training set (a full softmax: all same-type-other-colour
  phrases are hard negatives in every step), and phrase -> photos of the batch.

The epoch kept is the one with the best validation nDCG@10 of photo retrieval by the held-out
products' own "<colour> <type>" phrases (grade 2: same phrase, 1: same type), not the lowest loss.

Output, in ``MODELS_DIR``::

    manifest.json                    {"current": VERSION, "versions": [...]}
    versions/VERSION/image_head.safetensors, image_head.json
    versions/VERSION/manifest.json   encoder ids and dims, data hash, metrics, file checksums
    versions/VERSION/model_card.json, model_card.png
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
import torch

from prism.catalog import Catalog, Query
from prism.evaluation import ndcg_at_k, recall_at_k
from prism.fusers import save_fuser, save_retrieval
from prism.models.temporal import TemporalPool, save_pool
from prism.tagger import PhotoTagger, fit_tagger, prediction_accuracy, save_tagger
from prism.training.clips import ClipFeatures, clip_features, train_pool
from prism.training.features import CatalogFeatures, extract_features
from prism.training.fusion_fit import DEFAULT_FIT_MODES, FusionFit, FusionSet, fit_fusion, kind_attribute_keys
from prism.training.heads import (
    COLOUR_DIM,
    MANIFEST_FILE,
    HeadConfig,
    ImageHead,
    head_input,
    project_image,
    save_head,
)
from prism.training.rerank_fit import RerankFit, RerankTrainConfig, train_reranker

log = structlog.get_logger(__name__)

CARD_JSON = "model_card.json"
CARD_PNG = "model_card.png"
TEST_SPLIT_FILE = "test_split.json"
# Salt of the test split's group hash, so it is independent of the validation split's.
_TEST_SALT = 104_729


# -------------------------------------------------------------------------------------------------
# pure pieces


def split_by_group(groups: Sequence[str], fraction: float, seed: int) -> npt.NDArray[np.bool_]:
    """True for rows held out: a group is held out when a hash of (seed, group) falls under ``fraction``.

    Deterministic, independent of row order, and a group is never on both sides.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    out = np.zeros(len(groups), dtype=bool)
    cache: dict[str, bool] = {}
    for i, g in enumerate(groups):
        held = cache.get(g)
        if held is None:
            digest = hashlib.sha256(f"{seed}\0{g}".encode()).digest()
            held = int.from_bytes(digest[:8], "big") / 2.0**64 < fraction
            cache[g] = held
        out[i] = held
    return out


def positive_mask(row_keys: torch.Tensor, col_keys: torch.Tensor) -> torch.Tensor:
    """(n, m) bool: row i and column j share a key; negative keys are unique (match nothing)."""
    return (row_keys[:, None] == col_keys[None, :]) & (row_keys[:, None] >= 0)


def multi_positive_infonce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows with at least one positive of ``-log(sum_pos exp(l) / sum_all exp(l))``.

    With one positive per row this is the usual InfoNCE / cross-entropy.
    """
    has = positives.any(dim=1)
    if not bool(has.any()):
        return logits.sum() * 0.0
    lg, pos = logits[has], positives[has]
    pos_lse = torch.logsumexp(lg.masked_fill(~pos, float("-inf")), dim=1)
    return (torch.logsumexp(lg, dim=1) - pos_lse).mean()


def symmetric_infonce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    forward = multi_positive_infonce(logits, positives)
    backward = multi_positive_infonce(logits.T, positives.T)
    return 0.5 * (forward + backward)


# -------------------------------------------------------------------------------------------------
# configuration and data


@dataclass(frozen=True)
class TrainConfig:
    holdout_fraction: float = 0.1
    seed: int = 0
    # what the index will hold of each product, for fitting the fusion and hybrid weights
    fit_modes: tuple[str, ...] = DEFAULT_FIT_MODES
    # products per catalog whose synthesized clips train the video encoder's temporal pool (0: none)
    video_clips: int = 200
    epochs: int = 15
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.05
    hidden: int = 1024
    dropout: float = 0.3
    views: tuple[str, ...] = ("center",)
    text_views: tuple[str, ...] = ("full", "title")
    w_text: float = 1.0  # photo <-> full text
    w_phrase: float = 1.0  # photo -> all phrases, phrase -> photos
    w_type: float = 0.3  # photo -> all phrases of its type (any colour) as positives
    max_logit_scale: float = 100.0
    eval_k: tuple[int, ...] = (1, 5, 10)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


@dataclass
class _Split:
    """Stacked training tensors of all catalogs (or one catalog's validation rows)."""

    x: torch.Tensor  # (n, in_dim) head input
    text: torch.Tensor  # (n, 384) full text
    phrase: torch.Tensor  # (n,) global phrase id, -1 none
    key: torch.Tensor  # (n,) positive key: phrase id, or a unique negative number


@dataclass
class _Validation:
    name: str
    feats: CatalogFeatures  # the validation rows only
    x: npt.NDArray[np.float32]


@dataclass
class TrainResult:
    head: ImageHead
    config: TrainConfig
    history: list[dict[str, Any]]
    best_epoch: int
    metrics: dict[str, dict[str, float]]
    catalogs: list[dict[str, Any]]
    seconds: dict[str, float]
    # per catalog, the feature rows held out for validation (the fusion is fitted on them)
    validation_rows: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)


def _head_inputs(f: CatalogFeatures, config: HeadConfig) -> npt.NDArray[np.float32]:
    return head_input(f.image, f.colour, config, encoder_views=f.views)


def read_id_file(path: Path) -> set[str]:
    """Product ids, one a line (blank lines and ``#`` comments ignored)."""
    ids: set[str] = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.add(line)
    return ids


# -------------------------------------------------------------------------------------------------
# evaluation


def phrase_retrieval(
    z: npt.NDArray[np.float32],
    feats: CatalogFeatures,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Photo retrieval by "<colour> <type>" phrases among ``feats``' products.

    One query per distinct phrase of these products (its vector embedded as a query); grade 2 for
    products with that phrase, 1 for the same type; ranked over the rows of ``z`` (projected photos).
    Also Recall@K of each product's own full text finding its photo (text -> photo).
    """
    pidx = feats.phrase_index()
    uniq = sorted({int(i) for i in pidx if i >= 0})
    out: dict[str, float] = {}
    if uniq and len(z):
        q = feats.phrase_vectors[uniq]
        scores = q @ z.T
        depth = min(max(max(ks), 10), len(z))
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        order = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
        ids = feats.ids
        type_of: dict[int, str] = {}
        by_phrase: dict[int, list[str]] = {}
        by_type: dict[str, list[str]] = {}
        for pid, row, t in zip(ids, pidx, feats.types, strict=True):
            if row >= 0:
                type_of[int(row)] = t
                by_phrase.setdefault(int(row), []).append(pid)
            if t:
                by_type.setdefault(t, []).append(pid)
        ndcgs: list[float] = []
        recalls: dict[int, list[float]] = {k: [] for k in ks}
        for qi, ph in enumerate(uniq):
            rel = dict.fromkeys(by_type.get(type_of[ph], []) if type_of[ph] else [], 1)
            rel.update(dict.fromkeys(by_phrase[ph], 2))
            ranked = [ids[j] for j in order[qi]]
            ndcgs.append(ndcg_at_k(ranked, rel, 10))
            for k in ks:
                recalls[k].append(recall_at_k(ranked, rel, k))
        out["ndcg@10"] = float(np.mean(ndcgs))
        for k in ks:
            out[f"recall@{k}"] = float(np.mean(recalls[k]))
        out["queries"] = float(len(uniq))
    if "full" in feats.text and len(z):
        sims = feats.text["full"] @ z.T
        rank = (sims > np.diag(sims)[:, None]).sum(axis=1)
        for k in ks:
            out[f"text2photo_recall@{k}"] = float(np.mean(rank < k))
    out["products"] = float(len(z))
    return out


def evaluate_text_queries(
    z: npt.NDArray[np.float32],
    ids: Sequence[str],
    queries: Sequence[Query],
    query_vectors: npt.NDArray[np.float32],
) -> dict[str, float]:
    """nDCG@10 / Recall@1,10 of text queries over the products ``ids`` (rows of ``z``) only.

    Each query's relevant set is restricted to ``ids``; queries left with no grade-2 product there
    are skipped (their count is reported).
    """
    keep = set(ids)
    scores = query_vectors @ z.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    nd: list[float] = []
    r1: list[float] = []
    r10: list[float] = []
    skipped = 0
    for qi, q in enumerate(queries):
        rel = {pid: g for pid, g in q.relevant.items() if pid in keep}
        if not any(g >= 2 for g in rel.values()):
            skipped += 1
            continue
        ranked = [ids[j] for j in order[qi]]
        nd.append(ndcg_at_k(ranked, rel, 10))
        r1.append(recall_at_k(ranked, rel, 1))
        r10.append(recall_at_k(ranked, rel, 10))
    return {
        "n": float(len(nd)),
        "skipped": float(skipped),
        "ndcg@10": float(np.mean(nd)) if nd else 0.0,
        "recall@1": float(np.mean(r1)) if r1 else 0.0,
        "recall@10": float(np.mean(r10)) if r10 else 0.0,
    }


# -------------------------------------------------------------------------------------------------
# training


def _stack(parts: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]]) -> _Split:
    x = np.concatenate([p[0] for p in parts])
    text = np.concatenate([p[1] for p in parts])
    phrase = np.concatenate([p[2] for p in parts])
    key = np.where(phrase >= 0, phrase, -1 - np.arange(len(phrase)))
    return _Split(
        x=torch.from_numpy(x),
        text=torch.from_numpy(text),
        phrase=torch.from_numpy(phrase),
        key=torch.from_numpy(key.astype(np.int64)),
    )


def _batch_loss(
    head: ImageHead,
    batch: _Split,
    bank: torch.Tensor,
    bank_types: torch.Tensor,
    config: TrainConfig,
) -> torch.Tensor:
    z: torch.Tensor = head(batch.x)
    scale = head.logit_scale.exp().clamp(max=config.max_logit_scale)
    loss = z.new_zeros(())
    if config.w_text and batch.text.shape[1]:
        pos = positive_mask(batch.key, batch.key) | torch.eye(len(batch.key), dtype=torch.bool)
        loss = loss + config.w_text * symmetric_infonce(scale * z @ batch.text.T, pos)
    if config.w_phrase and len(bank):
        has = batch.phrase >= 0
        if bool(has.any()):
            # photo -> every phrase of the training set
            logits = scale * z[has] @ bank.T
            bank_ids = torch.arange(len(bank))
            to_bank = multi_positive_infonce(logits, batch.phrase[has][:, None] == bank_ids[None, :])
            if config.w_type:
                same_type = bank_types[batch.phrase[has]][:, None] == bank_types[None, :]
                loss = loss + config.w_type * multi_positive_infonce(logits, same_type)
            # phrase -> photos of the batch (all photos with that phrase are positives)
            present: torch.Tensor = torch.unique(batch.phrase[has])
            t2i = scale * bank[present] @ z.T
            from_bank = multi_positive_infonce(t2i, present[:, None] == batch.phrase[None, :])
            loss = loss + config.w_phrase * 0.5 * (to_bank + from_bank)
    return loss


def train_heads(
    catalog_features: Sequence[CatalogFeatures],
    config: TrainConfig,
    *,
    exclude_ids: set[str] | None = None,
    show_progress: bool = True,
    threads: int | None = 1,
) -> TrainResult:
    """Train an image head on ``catalog_features`` (split by group; see the module doc).

    ``threads``: torch CPU threads for the loop (restored afterwards; None leaves torch's setting).
    The head is small: on this 2-core machine shared with other work, one thread trained an epoch
    of both catalogs in ~4 s and two threads (spinning against the other processes) in ~30 s.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train_heads(catalog_features, config, exclude_ids=exclude_ids, show_progress=show_progress)
    finally:
        torch.set_num_threads(previous)


def _train_heads(
    catalog_features: Sequence[CatalogFeatures],
    config: TrainConfig,
    *,
    exclude_ids: set[str] | None,
    show_progress: bool,
) -> TrainResult:
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    exclude_ids = exclude_ids or set()
    first = catalog_features[0]
    head_config = HeadConfig(
        image_model=first.image_model,
        text_model=first.text_model,
        image_dim=first.image.shape[-1],
        colour_dim=first.colour.shape[1] if first.colour.ndim == 2 else COLOUR_DIM,
        out_dim=first.phrase_vectors.shape[1],
        hidden=config.hidden,
        dropout=config.dropout,
        views=tuple(config.views),
    )

    # one phrase table across catalogs: the same phrase string is the same class everywhere
    phrase_ids: dict[str, int] = {}
    bank_rows: list[npt.NDArray[np.float32]] = []
    bank_type_names: list[str] = []
    train_parts = []
    validations: list[_Validation] = []
    validation_rows: dict[str, npt.NDArray[np.int64]] = {}
    catalogs_info: list[dict[str, Any]] = []
    for f in catalog_features:
        usable = f.has_image & np.array([pid not in exclude_ids for pid in f.ids], dtype=bool)
        held = split_by_group(f.groups, config.holdout_fraction, config.seed)
        train_rows = np.flatnonzero(usable & ~held)
        val_rows = np.flatnonzero(usable & held)
        x = _head_inputs(f, head_config)
        local = f.phrase_index()
        global_idx = np.full(len(f), -1, dtype=np.int64)
        for row in train_rows:
            if local[row] >= 0:
                phrase = f.phrase_list[local[row]]
                if phrase not in phrase_ids:
                    phrase_ids[phrase] = len(phrase_ids)
                    bank_rows.append(f.phrase_vectors[local[row]])
                    bank_type_names.append(f.types[row])
                global_idx[row] = phrase_ids[phrase]
        text = f.text["full"] if "full" in f.text else np.zeros((len(f), 0), dtype=np.float32)
        train_parts.append((x[train_rows], text[train_rows], global_idx[train_rows]))
        validations.append(_Validation(f.name, f.subset(val_rows), x[val_rows]))
        validation_rows[f.name] = val_rows
        catalogs_info.append(
            {
                "name": f.name,
                "products": len(f),
                "with_image": int(f.has_image.sum()),
                "excluded": int((f.has_image & ~usable).sum()),
                "train": len(train_rows),
                "validation": len(val_rows),
                "phrases": len(f.phrase_list),
                "data_hash": f.data_hash,
            }
        )
    train = _stack(train_parts)
    n = len(train.key)
    if n < 2:
        raise ValueError("fewer than two training products with photos")
    bank = torch.from_numpy(np.stack(bank_rows)) if bank_rows else torch.zeros((0, head_config.out_dim))
    type_ids = {t: i for i, t in enumerate(sorted(set(bank_type_names)))}
    bank_types = torch.tensor([type_ids[t] for t in bank_type_names], dtype=torch.int64)

    head = ImageHead(head_config)
    head.set_input_stats(train.x.mean(dim=0), train.x.std(dim=0))
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for _name, p in head.named_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    total = steps_per_epoch * config.epochs
    warmup = min(steps_per_epoch, total // 10 + 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return config.lr * (step + 1) / warmup
        return config.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any]] = (-1.0, 0, copy.deepcopy(head.state_dict()))
    step = 0
    setup_s = time.perf_counter() - t0
    for epoch in range(1, config.epochs + 1):
        head.train()
        perm = torch.from_numpy(rng.permutation(n))
        losses = []
        for start in range(0, n, config.batch_size):
            idx = perm[start : start + config.batch_size]
            if len(idx) < 2:
                continue
            batch = _Split(train.x[idx], train.text[idx], train.phrase[idx], train.key[idx])
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = _batch_loss(head, batch, bank, bank_types, config)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        head.eval()
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "logit_scale": float(head.logit_scale.detach().exp()),
        }
        scores = []
        for v in validations:
            if len(v.x) == 0:
                continue
            z = project_image(head, v.x)
            m = phrase_retrieval(z, v.feats, config.eval_k)
            record[v.name] = m
            if "ndcg@10" in m:
                scores.append(m["ndcg@10"])
        record["val_ndcg@10"] = float(np.mean(scores)) if scores else float("nan")
        history.append(record)
        if show_progress:
            shown = {v.name: round(record[v.name].get("ndcg@10", -1.0), 4) for v in validations if v.name in record}
            log.info("train.epoch", epoch=epoch, loss=round(record["train_loss"], 4), val_ndcg10=shown)
        if scores and record["val_ndcg@10"] > best[0]:
            best = (record["val_ndcg@10"], epoch, copy.deepcopy(head.state_dict()))
    if not any(len(v.x) for v in validations):
        best = (float("nan"), config.epochs, copy.deepcopy(head.state_dict()))
    head.load_state_dict(best[2])
    head.eval()
    metrics: dict[str, dict[str, float]] = {}
    for v in validations:
        if len(v.x):
            metrics[v.name] = phrase_retrieval(project_image(head, v.x), v.feats, config.eval_k)
    train_s = time.perf_counter() - t0 - setup_s
    return TrainResult(
        head=head,
        config=config,
        history=history,
        best_epoch=best[1],
        metrics=metrics,
        catalogs=catalogs_info,
        seconds={"setup": round(setup_s, 2), "train": round(train_s, 2)},
        validation_rows=validation_rows,
    )


# -------------------------------------------------------------------------------------------------
# output


def _plot(result: TrainResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in result.history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    ax1.plot(epochs, [h["train_loss"] for h in result.history], marker="o", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("contrastive loss")
    ax1.set_title("training curve")
    ax1.axvline(result.best_epoch, color="grey", linestyle="--", label=f"kept: epoch {result.best_epoch}")
    ax1.legend()
    for name in result.metrics:
        for metric, style in (("ndcg@10", "-"), ("recall@1", ":"), ("recall@10", "--")):
            ys = [h.get(name, {}).get(metric, float("nan")) for h in result.history]
            ax2.plot(epochs, ys, style, marker=".", label=f"{name} {metric}")
    ax2.axvline(result.best_epoch, color="grey", linestyle="--")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("held-out photo retrieval by '<colour> <type>'")
    ax2.set_ylim(0, 1)
    ax2.set_title("validation Recall@K / nDCG@10")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fusion_summary(fusion: FusionFit | None) -> dict[str, Any]:
    if fusion is None:
        return {}
    r = fusion.report
    return {
        "modes": r["modes"],
        "kind": fusion.fuser.kind,
        "params": fusion.fuser.to_json(),
        "gate_val_ndcg@10": r.get("gate", {}).get("val_ndcg@10", {}).get("mean"),
        "mix_val_ndcg@10": r.get("mix", {}).get("val_ndcg@10", {}).get("mean"),
        "hybrid_weights": dict(fusion.retrieval.weights),
        "hybrid_val_ndcg@10": r.get("hybrid_val_ndcg@10"),
        "similar_weights": r["similar_weights"],
        "photo_only_val_ndcg@10": r.get("photo_only_val_ndcg@10"),
        "halves": r["halves"],
    }


def _tagger_summary(tagger: PhotoTagger | None) -> dict[str, Any] | None:
    if tagger is None:
        return None
    return {
        "input": tagger.input,
        "keys": {c.key: len(c.values) for c in tagger.classifiers},
        "val_accuracy": dict(tagger.accuracy or {}),
    }


def _reranker_summary(fit: RerankFit | None) -> dict[str, Any] | None:
    if fit is None:
        return None
    keys = (
        "enabled_by_default",
        "languages",
        "val_first_stage_ndcg@10",
        "val_reranked_ndcg@10",
        "kept_epoch",
        "head",
        "modes",
    )
    return {
        "config": fit.config.to_json(),
        **{k: fit.report.get(k) for k in keys},
        "seconds": fit.report.get("seconds"),
    }


def _json_dump(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def test_split(features: Sequence[CatalogFeatures], fraction: float, seed: int) -> dict[str, list[str]]:
    """Per catalog, the products of a ``fraction`` of the groups that training never sees (for
    ``prism eval --unseen``): another hash salt than the validation split, groups kept whole."""
    out: dict[str, list[str]] = {}
    for f in features:
        held = split_by_group(f.groups, fraction, seed + _TEST_SALT)
        out[f.name] = [pid for pid, h in zip(f.ids, held, strict=True) if h]
    return out


def read_test_split(models_dir: Path) -> dict[str, set[str]]:
    """The test products recorded by ``prism train --test-fraction`` for the current version."""
    from prism.training.heads import resolve_version

    path = resolve_version(models_dir) / TEST_SPLIT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: train with --test-fraction to hold products out")
    doc = json.loads(path.read_text())
    return {str(name): set(ids) for name, ids in doc["catalogs"].items()}


def train_video_pool(
    catalogs: Sequence[Catalog],
    features: Sequence[CatalogFeatures],
    result: TrainResult,
    exclude: set[str],
    config: TrainConfig,
    cache_dir: Path,
    *,
    show_progress: bool,
) -> tuple[TemporalPool, dict[str, Any]]:
    """The video encoder's temporal pool, on clips synthesized from training products' photos and
    checked on clips of the validation products (see :mod:`prism.training.clips`)."""
    rng = np.random.default_rng(config.seed)
    train_parts: list[ClipFeatures] = []
    val_parts: list[ClipFeatures] = []
    for catalog, f in zip(catalogs, features, strict=True):
        val_rows = set(int(i) for i in result.validation_rows.get(f.name, []))
        usable = [i for i in range(len(f)) if f.has_image[i] and f.ids[i] not in exclude]
        train_rows = [i for i in usable if i not in val_rows]
        picked = sorted(rng.choice(train_rows, size=min(config.video_clips, len(train_rows)), replace=False))
        val_pick = sorted(val_rows)[: max(1, config.video_clips // 3)]
        by_id = {p.id: p for p in catalog.products()}
        for rows, parts in ((picked, train_parts), (val_pick, val_parts)):
            if rows:
                products = [by_id[f.ids[i]] for i in rows]
                parts.append(
                    clip_features(catalog, products, cache_dir=cache_dir, seed=config.seed, show_progress=show_progress)
                )

    def stack(parts: list[ClipFeatures]) -> ClipFeatures:
        return ClipFeatures(
            np.concatenate([c.clips for c in parts]),
            np.concatenate([c.photos for c in parts]),
            [i for c in parts for i in c.ids],
        )

    return train_pool(stack(train_parts), stack(val_parts), seed=config.seed)


def train_tagger(
    features: Sequence[CatalogFeatures],
    catalogs: Sequence[Catalog],
    result: TrainResult,
    exclude_ids: set[str],
) -> PhotoTagger | None:
    """The photo tagger (:mod:`prism.tagger`) on the head's own training products: their photos in
    the shared space -> the attributes that mark a kind.  None when no catalog has such an
    attribute.  (Its accuracy is measured on the validation products: :func:`tagger_validated`.)"""
    by_catalog = [list(c.products()) for c in catalogs]
    keys = kind_attribute_keys(by_catalog)
    if not keys:
        return None
    inputs: list[npt.NDArray[np.float32]] = []
    labels: dict[str, list[str]] = {k: [] for k in keys}
    for f, products in zip(features, by_catalog, strict=True):
        by_id = {p.id: p for p in products}
        held = np.zeros(len(f), dtype=bool)
        held[result.validation_rows.get(f.name, np.zeros(0, dtype=np.int64))] = True
        usable = f.has_image & ~held & np.array([pid not in exclude_ids for pid in f.ids], dtype=bool)
        sub = f.subset(np.flatnonzero(usable))
        inputs.append(project_image(result.head, _head_inputs(sub, result.head.config)))
        for k in keys:
            labels[k].extend(str(by_id[pid].attributes.get(k) or "").strip() for pid in sub.ids)
    return fit_tagger(np.concatenate(inputs), labels, seed=result.config.seed)


def tagger_validated(tagger: PhotoTagger, sets: Sequence[FusionSet]) -> PhotoTagger:
    """``tagger`` with its accuracy on the validation products (whose predictions the sets hold)."""
    predicted = {k: [v for s in sets for v in s.predicted.get(k, ())] for k in tagger.keys}
    declared = {k: [str(p.attributes.get(k) or "").strip() for s in sets for p in s.products] for k in tagger.keys}
    accuracy = prediction_accuracy(predicted, declared)
    log.info("train.tagger", keys=list(tagger.keys), val_accuracy=accuracy)
    return replace(tagger, accuracy=accuracy)


def fusion_sets(
    features: Sequence[CatalogFeatures],
    catalogs: Sequence[Catalog],
    result: TrainResult,
    tagger: PhotoTagger | None = None,
) -> list[FusionSet]:
    """The validation products of each catalog in the shared space, for :func:`fit_fusion` (with
    what ``tagger`` predicts from their photos)."""
    sets = []
    for f, catalog in zip(features, catalogs, strict=True):
        rows = result.validation_rows.get(f.name)
        if rows is None or not len(rows):
            continue
        sub = f.subset(rows)
        z = project_image(result.head, _head_inputs(sub, result.head.config))
        mean = sub.image.mean(axis=1)  # (n, views, 1280) -> the encoder's mean vector
        native = (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        by_id = {p.id: p for p in catalog.products()}
        sets.append(
            FusionSet(
                name=f.name,
                ids=sub.ids,
                groups=sub.groups,
                phrases=sub.phrases,
                types=sub.types,
                text=sub.text,
                image=z,
                native=native,
                phrase_list=sub.phrase_list,
                phrase_vectors=sub.phrase_vectors,
                products=[by_id[pid] for pid in sub.ids],
                predicted=tagger.predict_columns(z) if tagger is not None else {},
            )
        )
    return sets


def write_models(
    out: Path,
    result: TrainResult,
    features: Sequence[CatalogFeatures],
    catalogs: Sequence[Catalog],
    *,
    extract_seconds: float,
    fusion: FusionFit | None = None,
    test_ids: Mapping[str, list[str]] | None = None,
    test_fraction: float = 0.0,
    video_pool: TemporalPool | None = None,
    video_report: Mapping[str, Any] | None = None,
    reranker: RerankFit | None = None,
    tagger: PhotoTagger | None = None,
) -> Path:
    """Write a new version folder under ``out/versions`` and point ``out/manifest.json`` at it."""
    out = Path(out)
    staging = out / "versions" / f".staging-{os.getpid()}"
    if staging.exists():
        import shutil

        shutil.rmtree(staging)
    files = save_head(staging, result.head)
    weights_sha = files["image_head.safetensors"]
    if video_pool is not None:
        files.update(save_pool(staging, video_pool))
    if fusion is not None:
        files.update(save_fuser(staging, fusion.fuser, fusion.report))
        files.update(save_retrieval(staging, fusion.retrieval))
    if reranker is not None:
        from prism.models.reranker import save_reranker

        files.update(save_reranker(staging, reranker.model, reranker.config, reranker.report))
    if tagger is not None:
        files.update(save_tagger(staging, tagger))
    if test_ids:
        _json_dump(
            {"fraction": test_fraction, "seed": result.config.seed, "catalogs": dict(test_ids)},
            staging / TEST_SPLIT_FILE,
        )
        files[TEST_SPLIT_FILE] = hashlib.sha256((staging / TEST_SPLIT_FILE).read_bytes()).hexdigest()
    created = datetime.now(UTC)
    version = f"{created.strftime('%Y%m%dT%H%M%SZ')}-{weights_sha[:8]}"
    data_hash = hashlib.sha256("\n".join(f.data_hash for f in features).encode()).hexdigest()
    cfg = result.head.config
    seconds = {"features": round(extract_seconds, 2), **result.seconds}
    seconds["total"] = round(sum(seconds.values()), 2)
    manifest: dict[str, Any] = {
        "format": 1,
        "version": version,
        "created": created.isoformat(),
        "encoders": {
            "image": {"id": cfg.image_model, "dim": cfg.image_dim, "views": list(cfg.views)},
            "text": {"id": cfg.text_model, "dim": cfg.out_dim},
            "colour_features": {"dim": cfg.colour_dim, "function": "prism.training.heads.colour_features"},
        },
        "heads": {
            "image": {
                "weights": "image_head.safetensors",
                "config": "image_head.json",
                "in_dim": cfg.in_dim,
                "out_dim": cfg.out_dim,
                "space": cfg.text_model,
            }
        },
        "fusion": _fusion_summary(fusion),
        "reranker": _reranker_summary(reranker),
        "tagger": _tagger_summary(tagger),
        "video": {k: v for k, v in (video_report or {}).items() if k != "history"},
        "test_split": {"fraction": test_fraction, "products": {k: len(v) for k, v in (test_ids or {}).items()}},
        "data": {
            "hash": data_hash,
            "catalogs": [{**info, "path": str(c.root)} for info, c in zip(result.catalogs, catalogs, strict=True)],
        },
        "training": {**result.config.to_json(), "best_epoch": result.best_epoch, "seconds": seconds},
        "metrics": result.metrics,
        "files": files,
    }
    card: dict[str, Any] = {
        "model": f"prism image head {version}",
        "description": (
            "MLP projection from frozen EfficientNet-Lite0 features plus a foreground colour histogram into the "
            "multilingual-e5-small text space, trained contrastively on the catalogs' own (photo, text) pairs."
        ),
        "intended_use": "photo-only products and photo queries retrieved by text in the shared space",
        "data": manifest["data"],
        "training": manifest["training"],
        "validation": (
            "held-out product groups (colour variants together); queries: the held-out products' own "
            "'<colour> <type>' attribute phrases, grade 2 same phrase, 1 same type, ranked over held-out photos"
        ),
        "selected_epoch": result.best_epoch,
        "metrics": result.metrics,
        "fusion": _fusion_summary(fusion),
        "reranker": _reranker_summary(reranker),
        "history": result.history,
        "limitations": [
            "colour and type vocabulary is the catalogs' own; unseen types map to the nearest seen ones",
            "trained on studio product photos on plain backgrounds; customer photos are harder",
        ],
        "plot": CARD_PNG,
    }
    _json_dump(manifest, staging / MANIFEST_FILE)
    _json_dump(card, staging / CARD_JSON)
    _plot(result, staging / CARD_PNG)
    final = out / "versions" / version
    if final.exists():
        import shutil

        shutil.rmtree(final)
    os.replace(staging, final)

    top_path = out / MANIFEST_FILE
    top: dict[str, Any] = json.loads(top_path.read_text()) if top_path.is_file() else {"format": 1, "versions": []}
    top["current"] = version
    top["versions"] = [v for v in top.get("versions", []) if v.get("version") != version] + [
        {"version": version, "created": manifest["created"], "data_hash": data_hash, "metrics": result.metrics}
    ]
    _json_dump(top, top_path)
    return final


# -------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="prism train", description="train the image projection head")
    p.add_argument("--catalog", type=Path, action="append", required=True, help="catalog folder (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="models folder (MODELS_DIR)")
    p.add_argument("--holdout-fraction", type=float, default=d.holdout_fraction, help="share of groups held out")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--exclude-ids", type=Path, help="file of product ids (one a line) never used, not even to validate")
    p.add_argument(
        "--video-clips",
        type=int,
        default=d.video_clips,
        help="training products per catalog whose synthesized clips train the video pool (0: skip)",
    )
    p.add_argument(
        "--fit-strip",
        default=",".join(d.fit_modes),
        help="what the index will hold of each product (photo, title-photo, none; comma-separated), for fitting "
        "the fusion and hybrid weights (default: full and title-only products)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="share of product groups never used, recorded for `prism eval --unseen` (default 0: train on all)",
    )
    p.add_argument(
        "--rerank-epochs",
        type=int,
        default=RerankTrainConfig().epochs,
        help="epochs of the cross-encoder reranker on the validation products (0: no reranker)",
    )
    p.add_argument(
        "--rerank-precision",
        choices=("fp32", "bf16", "auto"),
        default=RerankTrainConfig().precision,
        help="CPU precision of the reranker's training steps (auto: bf16 where native; default fp32, see README)",
    )
    p.add_argument("--views", default=",".join(d.views), help="image encoder views averaged into the input")
    p.add_argument("--cache-dir", type=Path, help="feature cache (default $PRISM_CACHE_DIR or var/cache)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of the training loop (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def run(args: argparse.Namespace) -> Path:
    from prism.settings import CommonSettings

    cache_dir = args.cache_dir or CommonSettings().cache_dir
    config = TrainConfig(
        holdout_fraction=args.holdout_fraction,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        views=tuple(v for v in args.views.split(",") if v),
        fit_modes=tuple(m for m in args.fit_strip.split(",") if m),
        video_clips=args.video_clips,
    )
    catalogs = [Catalog.open(c) for c in args.catalog]
    names = [c.name for c in catalogs]
    if len(set(names)) != len(names):
        raise SystemExit(f"prism train: catalog folder names must differ (they name the caches): {names}")
    t0 = time.perf_counter()
    features = [
        extract_features(
            c, cache_dir=cache_dir, views=config.views, text_views=config.text_views, show_progress=not args.quiet
        )
        for c in catalogs
    ]
    extract_s = time.perf_counter() - t0
    exclude = read_id_file(args.exclude_ids) if args.exclude_ids else set()
    test_ids = test_split(features, args.test_fraction, config.seed) if args.test_fraction > 0 else {}
    exclude |= {pid for ids in test_ids.values() for pid in ids}
    result = train_heads(features, config, exclude_ids=exclude, show_progress=not args.quiet, threads=args.threads)
    t_video = time.perf_counter()
    video_pool, video_report = (
        train_video_pool(catalogs, features, result, exclude, config, cache_dir, show_progress=not args.quiet)
        if config.video_clips > 0
        else (None, {})
    )
    result.seconds["video"] = round(time.perf_counter() - t_video, 2)
    t_fuse = time.perf_counter()
    tagger = train_tagger(features, catalogs, result, exclude)
    sets = fusion_sets(features, catalogs, result, tagger)
    tagger = tagger_validated(tagger, sets) if tagger is not None else None
    fusion = fit_fusion(sets, seed=config.seed, modes=config.fit_modes)
    result.seconds["fusion"] = round(time.perf_counter() - t_fuse, 2)
    t_rerank = time.perf_counter()
    reranker = (
        train_reranker(
            sets,
            fusion.fuser,
            fusion.retrieval,
            list(config.fit_modes),
            cache_dir,
            train_config=RerankTrainConfig(
                epochs=args.rerank_epochs, precision=args.rerank_precision, seed=config.seed
            ),
            show_progress=not args.quiet,
        )
        if args.rerank_epochs > 0
        else None
    )
    result.seconds["reranker"] = round(time.perf_counter() - t_rerank, 2)
    folder = write_models(
        args.out,
        result,
        features,
        catalogs,
        extract_seconds=extract_s,
        fusion=fusion,
        test_ids=test_ids,
        test_fraction=args.test_fraction,
        video_pool=video_pool,
        video_report=video_report,
        reranker=reranker,
        tagger=tagger,
    )
    if not args.quiet:
        for name, m in result.metrics.items():
            print(
                f"{name}: held-out photo <- '<colour> <type>' nDCG@10 {m.get('ndcg@10', 0):.3f} "
                f"R@1 {m.get('recall@1', 0):.3f} R@10 {m.get('recall@10', 0):.3f} "
                f"({int(m.get('products', 0))} products, {int(m.get('queries', 0))} queries)"
            )
        summary = _fusion_summary(fusion)
        if summary["gate_val_ndcg@10"] is not None:
            print(
                f"fusion ({'+'.join(summary['modes'])}): {summary['kind']} {summary['params']} (validation "
                f"nDCG@10: length gate {summary['gate_val_ndcg@10']:.3f}, constant mix "
                f"{summary['mix_val_ndcg@10']:.3f}); hybrid weights {summary['hybrid_weights']} "
                f"(validation nDCG@10 {summary['hybrid_val_ndcg@10']:.3f})"
            )
        print(f"similar products: weights {summary['similar_weights']}")
        if tagger is not None:
            print(f"photo tagger: validation accuracy {dict(tagger.accuracy or {})}")
        if reranker is not None:
            r = reranker.report
            print(
                f"reranker: validation nDCG@10 {r['val_first_stage_ndcg@10']:.3f} first stage -> "
                f"{r['val_reranked_ndcg@10']:.3f} reranked (epoch {r['kept_epoch']}, "
                f"{'on' if r['enabled_by_default'] else 'off'} by default, {r['seconds']:.0f} s)"
            )
        print(f"kept epoch {result.best_epoch}; wrote {folder} in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    from prism.logs import setup_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    setup_logging(os.environ.get("PRISM_LOG_LEVEL", "INFO"), "console")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
