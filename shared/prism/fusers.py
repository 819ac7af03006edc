"""How a product's shared-space vectors become its one ``shared`` vector, and how the ranked lists
of a text query are combined (no torch needed here: the fusion service and gateway load these).

A product may have text, photos, or both (and video later), and how far each can be trusted
differs: a full H&M description says more than a two-word title, a photo says colour and shape but
not "cotton".  ``prism train`` (:mod:`prism.training.fusion_fit`) fits a :class:`LengthGate` (the
text's weight as a function of how long the text is) on held-out products and keeps it only if it
beats the best constant mix on other held-out products; otherwise that :class:`FixedMix` is saved.
Without trained models the mix is equal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

FUSION_FILE: Final = "fusion.json"
FUSION_FORMAT: Final = 1
# Modalities the shared vector is made of, in ``fuse_many``'s column order.
SHARED_MODALITIES: Final = ("text", "image")
# "similar products" weights by this prefix + attribute key boost candidates with the same value
ATTRIBUTE_PREFIX: Final = "attribute:"
# ... and by this prefix + key, boosts for the same value *predicted from the photo* (prism.tagger)
PREDICTED_PREFIX: Final = "predicted:"
# the payload field each kind of boost reads
BOOST_FIELDS: Final = {ATTRIBUTE_PREFIX: "attributes", PREDICTED_PREFIX: "predicted"}


class Fuser(Protocol):
    """What the fusion service calls: present vectors (unit, shared space) -> one vector + weights."""

    @property
    def kind(self) -> str: ...

    @property
    def modalities(self) -> tuple[str, ...]: ...

    def weights_many(
        self, present: npt.NDArray[np.bool_], text_chars: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """``(n, M)`` weights (rows sum to 1 over the present modalities) from ``(n, M)`` presence
        and ``(n,)`` text lengths in characters."""
        ...


def fuse_many(
    fuser: Fuser, vecs: npt.NDArray[np.float32], present: npt.NDArray[np.bool_], text_chars: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """``(n, M, d)`` vectors in ``fuser.modalities`` order -> ``(n, d)`` unit vectors."""
    w = fuser.weights_many(present, text_chars)
    fused = (w[..., None] * vecs).sum(axis=1)
    out: npt.NDArray[np.float32] = (fused / np.maximum(np.linalg.norm(fused, axis=1, keepdims=True), 1e-12)).astype(
        np.float32
    )
    return out


def fuse_one(
    fuser: Fuser, vectors: Mapping[str, npt.NDArray[np.float32]], text_chars: int = 0
) -> tuple[npt.NDArray[np.float32], dict[str, float]]:
    """One product's present vectors by modality -> its fused vector and each modality's weight."""
    dim = next(iter(vectors.values())).shape[-1]
    mods = fuser.modalities
    vecs = np.zeros((1, len(mods), dim), dtype=np.float32)
    present = np.zeros((1, len(mods)), dtype=bool)
    for i, m in enumerate(mods):
        v = vectors.get(m)
        if v is not None:
            vecs[0, i] = np.asarray(v, dtype=np.float32).reshape(dim)
            present[0, i] = True
    chars = np.asarray([text_chars], dtype=np.float32)
    w = fuser.weights_many(present, chars)[0]
    return fuse_many(fuser, vecs, present, chars)[0], {m: float(w[i]) for i, m in enumerate(mods) if present[0, i]}


def _normalise(w: npt.NDArray[np.float32], present: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    w = w * present
    # a row whose weighted modalities are all absent falls back to equal weights over what is there
    empty = w.sum(axis=1) <= 0
    w[empty] = present[empty].astype(np.float32)
    out: npt.NDArray[np.float32] = (w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return out


@dataclass(frozen=True)
class FixedMix:
    """A constant weight per modality (renormalised over the modalities present)."""

    weights: Mapping[str, float]
    kind: str = "fixed"

    @property
    def modalities(self) -> tuple[str, ...]:
        # the shared modalities in their canonical order (a file's key order must not matter)
        known = tuple(m for m in SHARED_MODALITIES if m in self.weights)
        return known + tuple(sorted(m for m in self.weights if m not in SHARED_MODALITIES))

    def weights_many(
        self, present: npt.NDArray[np.bool_], text_chars: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        row = np.asarray([self.weights[m] for m in self.modalities], dtype=np.float32)
        return _normalise(np.repeat(row[None, :], len(present), axis=0), present)

    def to_json(self) -> dict[str, Any]:
        return {"weights": dict(self.weights)}


@dataclass(frozen=True)
class LengthGate:
    """Text vs photo weight gated by the length of the product's text: ``text_short`` at
    ``short_chars`` characters or fewer, ``text_long`` at ``long_chars`` or more, interpolated in
    log-length between.  Two numbers fitted on held-out products (a title-only catalog and a
    full-description one want very different mixes: measured 0.3 vs 0.8 text on H&M)."""

    text_short: float
    text_long: float
    short_chars: float = 24.0
    long_chars: float = 400.0
    kind: str = "length-gate"

    @property
    def modalities(self) -> tuple[str, ...]:
        return SHARED_MODALITIES

    def text_weight(self, text_chars: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        x = np.log1p(np.asarray(text_chars, dtype=np.float32))
        lo, hi = np.log1p(self.short_chars), np.log1p(self.long_chars)
        t = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        out: npt.NDArray[np.float32] = (self.text_short + t * (self.text_long - self.text_short)).astype(np.float32)
        return out

    def weights_many(
        self, present: npt.NDArray[np.bool_], text_chars: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        a = self.text_weight(text_chars)
        return _normalise(np.stack([a, 1.0 - a], axis=1).astype(np.float32), present)

    def to_json(self) -> dict[str, Any]:
        return {
            "text_short": self.text_short,
            "text_long": self.text_long,
            "short_chars": self.short_chars,
            "long_chars": self.long_chars,
        }


def equal_mix(modalities: Sequence[str] = SHARED_MODALITIES) -> FixedMix:
    return FixedMix({m: 1.0 for m in modalities}, kind="equal")


def save_fuser(folder: Path, fuser: FixedMix | LengthGate, validation: Mapping[str, Any]) -> dict[str, str]:
    """Write ``fusion.json``: the kind, its parameters and the validation that chose it."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"format": FUSION_FORMAT, "kind": fuser.kind, "params": fuser.to_json(), "validation": dict(validation)}
    (folder / FUSION_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return {FUSION_FILE: hashlib.sha256((folder / FUSION_FILE).read_bytes()).hexdigest()}


def _number(params: Mapping[str, Any], key: str, path: Path, lo: float, hi: float) -> float:
    v = params.get(key)
    if not isinstance(v, (int, float)) or not lo <= float(v) <= hi:
        raise ValueError(f"{path}: {key!r} must be a number in [{lo}, {hi}], got {v!r}")
    return float(v)


def load_fuser(folder: Path) -> FixedMix | LengthGate | None:
    """The fusion a model version was trained with (None when the version has none)."""
    path = folder / FUSION_FILE
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    if doc.get("format") != FUSION_FORMAT:
        raise ValueError(f"{path}: unsupported format {doc.get('format')!r} (this code reads {FUSION_FORMAT})")
    params = doc.get("params") or {}
    kind = str(doc.get("kind", ""))
    if kind == "length-gate":
        return LengthGate(
            text_short=_number(params, "text_short", path, 0.0, 1.0),
            text_long=_number(params, "text_long", path, 0.0, 1.0),
            short_chars=_number(params, "short_chars", path, 0.0, 1e6),
            long_chars=_number(params, "long_chars", path, 0.0, 1e6),
        )
    weights = params.get("weights")
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"{path}: a {kind!r} fusion needs 'weights'")
    return FixedMix({str(k): _number(weights, k, path, 0.0, 1e6) for k in weights}, kind=kind or "fixed")


# -- hybrid retrieval weights --------------------------------------------------------------------

RETRIEVAL_FILE: Final = "retrieval.json"


@dataclass(frozen=True)
class RetrievalWeights:
    """Weighted reciprocal-rank fusion of the ranked lists a text query gets: dense lists by the
    index's vector name (``shared``, ``text``) and ``lexical`` (BM25), chosen on validation data."""

    weights: Mapping[str, float]
    rrf_k: int = 60
    validation: Mapping[str, Any] | None = None
    # "similar products": weights of the cosine similarities by vector name (``shared``, ``image``,
    # ``text``, ``more_like_this``), summed, plus ``attribute:<key>`` boosts added when a candidate
    # has the product's own value of that attribute (``predicted:<key>``: the value its photo shows,
    # see prism.tagger); empty: the gateway's own image/text setting.
    similar: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "weights": dict(self.weights),
            "rrf_k": self.rrf_k,
            "similar": dict(self.similar),
            "validation": dict(self.validation or {}),
        }


def attribute_boosts(similar: Mapping[str, float]) -> dict[tuple[str, str], float]:
    """The attribute boosts among "similar products" weights, by (payload field, key): declared
    attributes under ``attributes``, predicted ones under ``predicted`` (weight > 0 only)."""
    out: dict[tuple[str, str], float] = {}
    for name, w in similar.items():
        for prefix, payload_field in BOOST_FIELDS.items():
            if name.startswith(prefix) and w > 0:
                out[(payload_field, name.removeprefix(prefix))] = w
    return out


def save_retrieval(folder: Path, retrieval: RetrievalWeights) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RETRIEVAL_FILE).write_text(json.dumps(retrieval.to_json(), indent=2, sort_keys=True) + "\n")
    return {RETRIEVAL_FILE: hashlib.sha256((folder / RETRIEVAL_FILE).read_bytes()).hexdigest()}


def load_retrieval(folder: Path) -> RetrievalWeights | None:
    path = folder / RETRIEVAL_FILE
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    parsed: dict[str, dict[str, float]] = {}
    for key in ("weights", "similar"):
        weights = doc.get(key, {} if key == "similar" else None)
        if not isinstance(weights, dict) or any(not isinstance(v, (int, float)) or v < 0 for v in weights.values()):
            raise ValueError(f"{path}: {key!r} must map list names to non-negative numbers")
        parsed[key] = {str(k): float(v) for k, v in weights.items()}
    rrf_k = doc.get("rrf_k", 60)
    if not isinstance(rrf_k, int) or rrf_k < 1:
        raise ValueError(f"{path}: 'rrf_k' must be a positive integer")
    return RetrievalWeights(parsed["weights"], rrf_k, doc.get("validation") or {}, parsed["similar"])
