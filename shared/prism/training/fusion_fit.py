"""Fit the fusion of a product's shared-space vectors, and the hybrid weights of text search.

Both are fitted on validation products the image head never trained on (their projected photos
are as good as those of new products, not better), split by group into two halves:

* half A fits the :class:`~prism.fusers.LengthGate` (the text/photo weight as a function of the
  length of the product's text) and, as the baseline, the best constant mix, with the catalog made
  as the index sees it: full text or title only ("strip" modes);
* half B chooses: the gate is kept only if its nDCG@10 beats the constant mix there,
  and the reciprocal-rank-fusion weights of the gateway's lists (``shared`` dense, ``text`` dense,
  ``lexical`` BM25) are picked by a grid search on B.

Queries are each product's own "<colour> <type>" phrase (grade 2 same phrase, 1 same type), the
form shoppers type; the query files under ../shared are never used here.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from prism.catalog import Product
from prism.evaluation import ndcg_at_k
from prism.fusers import (
    ATTRIBUTE_PREFIX,
    PREDICTED_PREFIX,
    SHARED_MODALITIES,
    FixedMix,
    Fuser,
    LengthGate,
    RetrievalWeights,
    fuse_many,
)
from prism.lexical import Bm25Encoder
from prism.training.features import GROUP_KEYS

log = structlog.get_logger(__name__)

# strip mode -> the text view the index holds (None: no text at all)
MODES: dict[str, str | None] = {"none": "full", "title-photo": "title", "photo": None}
RRF_K = 60
POOL = 100


@dataclass
class FusionSet:
    """Validation products of one catalog with photos, in the shared space."""

    name: str
    ids: list[str]
    groups: list[str]
    phrases: list[str]
    types: list[str]
    text: Mapping[str, npt.NDArray[np.float32]]  # view -> (n, d) passage vectors
    image: npt.NDArray[np.float32]  # (n, d) projected photos
    native: npt.NDArray[np.float32]  # (n, 1280) the image encoder's own (unit) vectors
    phrase_list: list[str]
    phrase_vectors: npt.NDArray[np.float32]  # query vectors of phrase_list
    products: list[Product]
    # key -> per product, the value the photo tagger predicts (prism.tagger; empty without one)
    predicted: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # derived arrays, computed once (the grid searches ask for them hundreds of times)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def rows(self, mask: npt.NDArray[np.bool_]) -> FusionSet:
        idx = np.flatnonzero(mask)
        return FusionSet(
            name=self.name,
            ids=[self.ids[i] for i in idx],
            groups=[self.groups[i] for i in idx],
            phrases=[self.phrases[i] for i in idx],
            types=[self.types[i] for i in idx],
            text={k: v[idx] for k, v in self.text.items()},
            image=self.image[idx],
            native=self.native[idx],
            phrase_list=self.phrase_list,
            phrase_vectors=self.phrase_vectors,
            products=[self.products[i] for i in idx],
            predicted={k: [v[int(i)] for i in idx] for k, v in self.predicted.items()},
        )

    def inputs(self, mode: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
        """``(n, 2, d)`` text and photo vectors, ``(n, 2)`` presence and ``(n,)`` text lengths, as the
        index sees them in this strip mode."""
        key = f"inputs/{mode}"
        if key in self._memo:
            cached: tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], npt.NDArray[np.float32]] = self._memo[key]
            return cached
        n, d = self.image.shape
        vecs = np.zeros((n, len(SHARED_MODALITIES), d), dtype=np.float32)
        present = np.zeros((n, len(SHARED_MODALITIES)), dtype=bool)
        view = MODES[mode]
        if view is not None:
            vecs[:, 0] = self.text[view]
            present[:, 0] = True
        vecs[:, 1] = self.image
        present[:, 1] = True
        chars = np.asarray([len(p.stripped(mode).text()) for p in self.products], dtype=np.float32)  # type: ignore[arg-type]
        self._memo[key] = (vecs, present, chars)
        return vecs, present, chars

    def queries(self) -> tuple[npt.NDArray[np.float32], list[dict[str, int]], list[str]]:
        """One query per distinct phrase here: its vector, graded relevance and its text."""
        if "queries" in self._memo:
            cached: tuple[npt.NDArray[np.float32], list[dict[str, int]], list[str]] = self._memo["queries"]
            return cached
        where = {p: i for i, p in enumerate(self.phrase_list)}
        uniq = sorted({p for p in self.phrases if p})
        by_type: dict[str, list[str]] = {}
        for pid, t in zip(self.ids, self.types, strict=True):
            if t:
                by_type.setdefault(t, []).append(pid)
        rels: list[dict[str, int]] = []
        for ph in uniq:
            members = [pid for pid, p in zip(self.ids, self.phrases, strict=True) if p == ph]
            kind = next(t for p, t in zip(self.phrases, self.types, strict=True) if p == ph)
            rel = dict.fromkeys(by_type.get(kind, []) if kind else [], 1)
            rel.update(dict.fromkeys(members, 2))
            rels.append(rel)
        vecs = self.phrase_vectors[[where[p] for p in uniq]] if uniq else np.zeros((0, self.image.shape[1]), np.float32)
        self._memo["queries"] = (vecs.astype(np.float32), rels, uniq)
        return self._memo["queries"]  # type: ignore[no-any-return]


def halves(groups: Sequence[str], seed: int) -> npt.NDArray[np.bool_]:
    """True for half A (gate training), False for half B (selection); groups never straddle."""
    from prism.training.train import split_by_group

    return ~split_by_group(groups, 0.5, seed + 7919)


# -- ranking metrics --------------------------------------------------------------------------------


def _top(scores: npt.NDArray[np.float32], depth: int) -> npt.NDArray[np.int64]:
    depth = min(depth, scores.shape[1])
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    out: npt.NDArray[np.int64] = np.take_along_axis(top, order, axis=1)
    return out


def dense_ndcg(
    q: npt.NDArray[np.float32], docs: npt.NDArray[np.float32], ids: Sequence[str], rels: Sequence[Mapping[str, int]]
) -> float:
    if not len(rels) or not len(ids):
        return 0.0
    order = _top(q @ docs.T, 10)
    return float(np.mean([ndcg_at_k([ids[j] for j in row], rel, 10) for row, rel in zip(order, rels, strict=True)]))


def bm25_scores(products: Sequence[Product], query_texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """``(queries, products)`` BM25 scores with statistics fitted on ``products`` (as the index does)."""
    bm25 = Bm25Encoder().fit(products)
    docs = [bm25.document_weights(p) for p in products]
    out = np.zeros((len(query_texts), len(products)), dtype=np.float32)
    for qi, text in enumerate(query_texts):
        q = bm25.query_weights(text, idf=True)
        for j, d in enumerate(docs):
            out[qi, j] = sum(w * d.get(t, 0.0) for t, w in q.items())
    return out


def rrf_scores(
    lists: Mapping[str, npt.NDArray[np.float32]], weights: Mapping[str, float], rrf_k: int = RRF_K
) -> npt.NDArray[np.float32]:
    """``(queries, products)`` weighted reciprocal-rank fusion of score matrices (each cut to its top
    ``POOL``, and a list gives no rank to a product it scores 0: BM25 without a matching term)."""
    first = next(iter(lists.values()))
    n_q, n = first.shape
    fused = np.zeros((n_q, n), dtype=np.float64)
    for name, scores in lists.items():
        w = float(weights.get(name, 0.0))
        if w <= 0:
            continue
        top = _top(scores, POOL)
        for qi in range(n_q):
            row = top[qi]
            row = row[scores[qi, row] > 0] if name == "lexical" else row
            fused[qi, row] += w / (rrf_k + np.arange(1, len(row) + 1))
    return fused.astype(np.float32)


def rrf_ndcg(
    lists: Mapping[str, npt.NDArray[np.float32]],
    weights: Mapping[str, float],
    ids: Sequence[str],
    rels: Sequence[Mapping[str, int]],
    rrf_k: int = RRF_K,
) -> float:
    """nDCG@10 of :func:`rrf_scores`."""
    if not len(rels):
        return 0.0
    order = _top(rrf_scores(lists, weights, rrf_k), 10)
    return float(np.mean([ndcg_at_k([ids[j] for j in row], rel, 10) for row, rel in zip(order, rels, strict=True)]))


# -- the fusion -------------------------------------------------------------------------------------


def fused_vectors(fuser: Fuser, s: FusionSet, mode: str) -> npt.NDArray[np.float32]:
    vecs, present, chars = s.inputs(mode)
    return fuse_many(fuser, vecs, present, chars)


def fuser_score(fuser: Fuser, sets: Sequence[FusionSet], modes: Sequence[str]) -> dict[str, float]:
    """Validation nDCG@10 of phrase queries against the fused vectors, per catalog/mode and mean."""
    out: dict[str, float] = {}
    for s in sets:
        q, rels, _ = s.queries()
        for mode in modes:
            out[f"{s.name}/{mode}"] = dense_ndcg(q, fused_vectors(fuser, s, mode), s.ids, rels)
    out["mean"] = float(np.mean(list(out.values()))) if out else 0.0
    return out


GRID = tuple(round(float(a), 2) for a in np.linspace(0.0, 1.0, 11))


def fit_mix(sets: Sequence[FusionSet], modes: Sequence[str]) -> tuple[FixedMix, dict[str, float]]:
    """The constant text weight with the best mean nDCG@10 over ``sets`` x ``modes``."""
    scores = {a: fuser_score(FixedMix({"text": a, "image": round(1 - a, 2)}), sets, modes)["mean"] for a in GRID}
    best = max(scores, key=lambda a: (scores[a], -abs(a - 0.5)))
    return FixedMix({"text": best, "image": round(1 - best, 2)}, kind="learned-mix"), {
        str(a): v for a, v in scores.items()
    }


def fit_length_gate(sets: Sequence[FusionSet], modes: Sequence[str]) -> tuple[LengthGate, float]:
    """The (short-text, long-text) weights with the best mean nDCG@10, by grid search: two numbers
    fitted on the ranking metric itself rather than a surrogate loss."""
    scores = {(a, b): fuser_score(LengthGate(a, b), sets, modes)["mean"] for a, b in itertools.product(GRID, GRID)}
    best = max(scores, key=lambda c: (scores[c], -abs(c[0] - 0.5) - abs(c[1] - 0.5)))
    return LengthGate(*best), scores[best]


def similar_ndcg(s: FusionSet, fuser: Fuser, mode: str, weights: Mapping[str, float], max_anchors: int = 300) -> float:
    """nDCG@10 of "more like this" for products of ``s`` as anchors (grade 2: same phrase, 1: same
    type), ranking the others by the weighted sum of cosine similarities of the named vectors and
    of ``attribute:<key>`` boosts (1 where a product has the anchor's value of that attribute, as
    the index holds it in ``mode``)."""
    key = f"similar/{mode}/{fuser!r}"  # the fused similarities depend on the fuser too
    if key not in s._memo:
        view = MODES[mode]
        anchors = [i for i, ph in enumerate(s.phrases) if ph][:max_anchors]
        f = fused_vectors(fuser, s, mode)
        # only the anchors' rows: (anchors, n) each, not (n, n)
        rows = {
            "shared": f[anchors] @ f.T,
            "image": s.native[anchors] @ s.native.T,
            # the photo alone in the shared space: where a short title dominates "shared", the
            # colour is still here
            "image_shared": s.image[anchors] @ s.image.T,
        }
        if view is not None:
            rows["text"] = s.text[view][anchors] @ s.text[view].T
            mlt = more_like_this_scores([p.stripped(mode) for p in s.products])  # type: ignore[arg-type]
            rows["more_like_this"] = mlt[anchors]
        rels = []
        for i in anchors:
            rel = {pid: 1 for pid, t in zip(s.ids, s.types, strict=True) if t and t == s.types[i]}
            rel.update({pid: 2 for pid, ph in zip(s.ids, s.phrases, strict=True) if ph == s.phrases[i]})
            rel.pop(s.ids[i], None)
            rels.append(rel)
        s._memo[key] = (rows, anchors, rels)
    rows, anchors, rels = s._memo[key]
    if not anchors:
        return 0.0
    total: npt.NDArray[np.float32] | None = None
    for name, w in weights.items():
        if w <= 0:
            continue
        if name.startswith((ATTRIBUTE_PREFIX, PREDICTED_PREFIX)):
            part = _attribute_matches(s, mode, name, anchors)
        elif name in rows:
            part = rows[name]
        else:
            continue
        total = w * part if total is None else total + w * part
    if total is None:
        return 0.0
    total = total.astype(np.float32)  # a fresh array: the memoised rows stay as they are
    total[np.arange(len(anchors)), anchors] = -np.inf  # never the product itself
    order = _top(total, 10)
    return float(np.mean([ndcg_at_k([s.ids[j] for j in row], rel, 10) for row, rel in zip(order, rels, strict=True)]))


def _attribute_matches(s: FusionSet, mode: str, boost: str, anchors: Sequence[int]) -> npt.NDArray[np.float32]:
    """``(anchors, n)``: 1 where a product has the anchor's (non-empty) value of the boost's key: a
    declared attribute (``attribute:<key>``) as the index sees the product in ``mode`` (stripped
    products have none), or the value the photo tagger predicts (``predicted:<key>``, every mode)."""
    key = f"similar-attribute/{mode}/{boost}/{len(anchors)}"
    if key not in s._memo:
        if boost.startswith(PREDICTED_PREFIX):
            values = list(s.predicted.get(boost.removeprefix(PREDICTED_PREFIX), [""] * len(s.products)))
        else:
            attribute = boost.removeprefix(ATTRIBUTE_PREFIX)
            values = [p.stripped(mode).attributes.get(attribute, "") for p in s.products]  # type: ignore[arg-type]
        codes: dict[str, int] = {}
        arr = np.array([codes.setdefault(v, len(codes)) if v else -1 for v in values], dtype=np.int64)
        a = arr[list(anchors)][:, None]
        s._memo[key] = ((a == arr[None, :]) & (a >= 0)).astype(np.float32)
    out: npt.NDArray[np.float32] = s._memo[key]
    return out


def similar_attribute_keys(sets: Sequence[FusionSet]) -> list[str]:
    """:func:`kind_attribute_keys` of the sets' products."""
    return kind_attribute_keys([s.products for s in sets])


def kind_attribute_keys(catalogs: Sequence[Sequence[Product]]) -> list[str]:
    """Attributes that may mark two products as alike: on at least a third of a catalog's products,
    with few distinct values (a kind, not an id or a code), and not the colour-variant group key."""
    keys: set[str] = set()
    for products in catalogs:
        n = len(products)
        if n < 2:
            continue
        values: dict[str, list[str]] = {}
        for p in products:
            for k, v in p.attributes.items():
                if v and v.strip():
                    values.setdefault(k, []).append(v)
        for k, vs in values.items():
            if len(vs) >= n / 3 and len(set(vs)) <= max(2.0, n / 4) and k.lower() not in GROUP_KEYS:
                keys.add(k)
    return sorted(keys)


def more_like_this_scores(products: Sequence[Product]) -> npt.NDArray[np.float32]:
    """``(n, n)`` BM25 scores of each product's "more like this" query against every product,
    relative to the best other product (as the gateway scales them); the diagonal is the product
    itself (excluded by the caller)."""
    bm25 = Bm25Encoder().fit(products)
    docs = [bm25.document_weights(p) for p in products]
    out = np.zeros((len(products), len(products)), dtype=np.float32)
    for i, p in enumerate(products):
        q = {t: w * bm25.idf(t) for t, w in bm25.more_like_this(p).items()}
        for j, d in enumerate(docs):
            if j != i:
                out[i, j] = sum(w * d.get(t, 0.0) for t, w in q.items())
        top = out[i].max()
        if top > 0:
            out[i] /= top
    return out


ATTRIBUTE_GRID = (0.0, 0.1, 0.25, 0.5, 1.0)


def _is_boost(name: str) -> bool:
    return name.startswith((ATTRIBUTE_PREFIX, PREDICTED_PREFIX))


def fit_similar(
    sets: Sequence[FusionSet], fuser: Fuser, modes: Sequence[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """The weights of "similar products" with the best mean nDCG@10: a grid over the shared,
    projected-photo, image, text and more-like-this similarities, then a boost per attribute key --
    declared ones where the index holds attributes (full products), else predicted ones where the
    sets carry the photo tagger's predictions -- each chosen in turn (two passes) and kept only
    when it helps."""

    def score(w: Mapping[str, float]) -> float:
        vals = [similar_ndcg(s, fuser, mode, w) for s in sets for mode in modes if len(s.ids) > 1]
        return float(np.mean(vals)) if vals else 0.0

    # (on a photo-only index "shared" is the projected photo: "image_shared" only repeats it)
    photo_only = all(MODES[m] is None for m in modes)
    grid = [
        {"shared": a, "image_shared": e, "image": b, "text": c, "more_like_this": d}
        for a, e, b, c, d in itertools.product(
            (0.0, 0.5, 1.0),
            (0.0,) if photo_only else (0.0, 0.5, 1.0),
            (0.0, 0.25, 0.5, 1.0),
            (0.0, 0.25, 0.5),
            (0.0, 0.25, 0.5, 1.0),
        )
        if a + b + c + d + e > 0
    ]
    scores: dict[str, float] = {json.dumps(w, sort_keys=True): score(w) for w in grid}
    best = max(scores, key=lambda k: scores[k])
    weights: dict[str, float] = json.loads(best)
    declared = similar_attribute_keys(sets) if any(MODES[m] == "full" for m in modes) else []
    # Where the index holds declared attributes, predicted ones (right ~3 times in 4) only add noise
    # on the same keys: offered both, H&M full products fell from 1.000 to 0.929 nDCG@10 on unseen
    # products although validation chose them.
    predicted = [] if declared else sorted({k for s in sets for k in s.predicted})
    boosts = [ATTRIBUTE_PREFIX + k for k in declared] + [PREDICTED_PREFIX + k for k in predicted]
    for _ in range(2 if boosts else 0):
        changed = False
        for name in boosts:
            # a zero boost is dropped, not stored: the same weights get the same label
            trials = {
                v: {n: w for n, w in {**weights, name: v}.items() if w > 0 or not _is_boost(n)} for v in ATTRIBUTE_GRID
            }
            tried: dict[float, float] = {}
            for v, trial in trials.items():
                label = json.dumps(trial, sort_keys=True)
                if label not in scores:
                    scores[label] = score(trial)
                tried[v] = scores[label]
            pick = max(tried, key=lambda v: (tried[v], -v))
            if pick != weights.get(name, 0.0) and tried[pick] > scores[best] + 1e-4:
                weights = trials[pick]
                best, changed = json.dumps(weights, sort_keys=True), True
        if not changed:
            break
    return json.loads(best), scores


@dataclass
class FusionFit:
    fuser: FixedMix | LengthGate
    retrieval: RetrievalWeights
    report: dict[str, Any]


def _photo_only_fit(b_sets: Sequence[FusionSet], modes: Sequence[str]) -> FusionFit:
    fuser = FixedMix({"text": 0.5, "image": 0.5}, kind="equal")
    similar, grid = fit_similar(b_sets, fuser, modes)
    best = round(grid[json.dumps(similar, sort_keys=True)], 4)
    log.info("train.similar", weights=similar, val_ndcg10=best)
    report: dict[str, Any] = {
        "modes": list(modes),
        "halves": {s.name: {"B": len(s.ids)} for s in b_sets},
        "note": "photo-only index: no text to weigh, only the similar-products weights are fitted",
        "similar_grid": {k: round(v, 4) for k, v in grid.items()},
        "similar_weights": similar,
    }
    # text queries on a photo-only index have only the shared vector to search
    retrieval = RetrievalWeights({"shared": 1.0}, RRF_K, {"similar_val_ndcg@10": best}, similar)
    return FusionFit(fuser, retrieval, report)


DEFAULT_FIT_MODES = ("none", "title-photo")


def fit_fusion(sets: Sequence[FusionSet], *, seed: int, modes: Sequence[str] = DEFAULT_FIT_MODES) -> FusionFit:
    """Gate or fixed mix, then the hybrid list weights, both chosen on half B (see the module doc).

    ``modes``: what the index will hold of each product (strip modes).  The default, full products
    and title-only ones together, suits a catalog where both occur; a deployment that knows its
    catalog's shape fits to it (``prism train --fit-strip``).  Photo-only products have no text to
    weigh: then only the "similar" weights are fitted.
    """
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        raise ValueError(f"unknown strip modes {sorted(unknown)}; choose from {sorted(MODES)}")
    a_sets, b_sets = [], []
    for s in sets:
        mask = halves(s.groups, seed)
        a_sets.append(s.rows(mask))
        b_sets.append(s.rows(~mask))
    similar_modes = tuple(modes)
    modes = tuple(m for m in modes if MODES[m] is not None)
    if not modes:
        return _photo_only_fit(b_sets, similar_modes)
    fit_on = [s for s in a_sets if len(s.ids)]
    gate, gate_a = fit_length_gate(fit_on, modes)
    mix, mix_a = fit_mix(fit_on, modes)
    gate_b = fuser_score(gate, b_sets, modes)
    mix_b = fuser_score(mix, b_sets, modes)
    fuser: FixedMix | LengthGate = gate if gate_b["mean"] > mix_b["mean"] else mix
    log.info(
        "train.fusion",
        gate=gate.to_json(),
        gate_val_ndcg10=round(gate_b["mean"], 4),
        mix=dict(mix.weights),
        mix_val_ndcg10=round(mix_b["mean"], 4),
        kept=fuser.kind,
    )

    # hybrid list weights on half B, per catalog and mode (photo-only products have no text lists)
    grid_lex = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    grid_text = (0.0, 0.5, 1.0)
    results: dict[tuple[float, float], list[float]] = {c: [] for c in itertools.product(grid_lex, grid_text)}
    for s in b_sets:
        q, rels, texts = s.queries()
        if not rels:
            continue
        for mode in modes:
            view = MODES[mode]
            assert view is not None
            stripped = [p.stripped(mode) for p in s.products]  # type: ignore[arg-type]
            lists = {
                "shared": q @ fused_vectors(fuser, s, mode).T,
                "text": q @ s.text[view].T,
                "lexical": bm25_scores(stripped, texts),
            }
            for w_lex, w_text in results:
                results[(w_lex, w_text)].append(
                    rrf_ndcg(lists, {"shared": 1.0, "text": w_text, "lexical": w_lex}, s.ids, rels)
                )
    mean = {c: float(np.mean(v)) if v else 0.0 for c, v in results.items()}
    best = max(mean, key=lambda c: (mean[c], -c[0], -c[1]))
    weights = {"shared": 1.0, "text": best[1], "lexical": best[0]}
    log.info("train.hybrid", weights=weights, val_ndcg10=round(mean[best], 4), dense_only=round(mean[(0.0, 0.0)], 4))
    report = {
        "modes": list(similar_modes),
        "halves": {s.name: {"A": len(a.ids), "B": len(b.ids)} for s, a, b in zip(sets, a_sets, b_sets, strict=True)},
        "gate": {"params": gate.to_json(), "fit_ndcg@10": gate_a, "val_ndcg@10": gate_b},
        "mix": {"params": mix.to_json(), "fit_ndcg@10_by_text_weight": mix_a, "val_ndcg@10": mix_b},
        "kept": fuser.kind,
        "hybrid_grid": {f"lexical={c[0]},text={c[1]}": round(v, 4) for c, v in mean.items()},
        "hybrid_val_ndcg@10": mean[best],
        "photo_only_val_ndcg@10": fuser_score(fuser, b_sets, ("photo",))["mean"],
    }
    similar, similar_grid = fit_similar(b_sets, fuser, similar_modes)
    log.info("train.similar", weights=similar, val_ndcg10=round(similar_grid[json.dumps(similar, sort_keys=True)], 4))
    report["similar_grid"] = {k: round(v, 4) for k, v in similar_grid.items()}
    report["similar_weights"] = similar
    retrieval = RetrievalWeights(
        weights,
        RRF_K,
        {
            "val_ndcg@10": round(mean[best], 4),
            "grid": report["hybrid_grid"],
            "similar_val_ndcg@10": round(similar_grid[json.dumps(similar, sort_keys=True)], 4),
        },
        similar,
    )
    return FusionFit(fuser, retrieval, report)
