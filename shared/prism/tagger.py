"""Attributes read off a product's photo: its kind (type, colour, ...) where the index holds none.

A shop's photo-only products (a supplier feed of images, a marketplace upload without a form) have
no attributes, so "similar products" cannot favour the same type and colour the way it does for
full products (:func:`prism.fusers.attribute_boosts`).  ``prism train`` therefore also fits, per
attribute key that marks a kind (:func:`prism.training.fusion_fit.similar_attribute_keys`), a
softmax classifier on the photo's vector in the shared text-image space (``image_shared``: the
image head's projection, which the image encoder computes the same way in training and serving).
The fusion service writes the predictions into a product's payload under ``predicted``
(``{"type": "Trousers", "colour": "Black"}``), apart from the product's own ``attributes``; the
"similar" fit chooses ``predicted:<key>`` boosts on validation like the attribute boosts.

Stored beside the heads as ``tagger.json`` (keys, values, input) and ``tagger.safetensors``.
Prediction is a matrix product in numpy; nothing is loaded at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

TAGGER_FILE: Final = "tagger.json"
TAGGER_WEIGHTS_FILE: Final = "tagger.safetensors"
TAGGER_FORMAT: Final = 1
# the named vector the classifiers read (see the module doc)
TAGGER_INPUT: Final = "image_shared"
# payload field of the predictions
PREDICTED_FIELD: Final = "predicted"
# a value seen fewer times than this in training is not a class of its own (too few to learn from)
MIN_CLASS_COUNT: Final = 5


@dataclass(frozen=True)
class AttributeClassifier:
    """Softmax regression ``logits = x @ weight.T + bias`` over one attribute's values."""

    key: str
    values: tuple[str, ...]
    weight: npt.NDArray[np.float32]  # (len(values), dim)
    bias: npt.NDArray[np.float32]  # (len(values),)

    def probabilities(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        logits = np.asarray(x, dtype=np.float32) @ self.weight.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        out: npt.NDArray[np.float32] = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        return out


@dataclass(frozen=True)
class PhotoTagger:
    """Per attribute key, the value a photo most likely shows."""

    classifiers: tuple[AttributeClassifier, ...]
    dim: int
    input: str = TAGGER_INPUT
    # validation accuracy per key (products the classifiers never saw), for the model card
    accuracy: Mapping[str, float] | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.classifiers)

    def predict(self, x: npt.NDArray[np.float32]) -> list[dict[str, str]]:
        """``(n, dim)`` photo vectors -> per row, key -> predicted value."""
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"the tagger reads ({self.dim},) vectors, got shape {arr.shape}")
        out: list[dict[str, str]] = [{} for _ in range(len(arr))]
        for c in self.classifiers:
            best = np.argmax(arr @ c.weight.T + c.bias, axis=1)
            for row, j in enumerate(best):
                out[row][c.key] = c.values[int(j)]
        return out

    def predict_columns(self, x: npt.NDArray[np.float32]) -> dict[str, list[str]]:
        """Like :meth:`predict`, by key: ``{key: [value of row 0, row 1, ...]}``."""
        rows = self.predict(x)
        return {k: [r[k] for r in rows] for k in self.keys}


def fit_tagger(
    x: npt.NDArray[np.float32],
    labels: Mapping[str, Sequence[str]],
    *,
    seed: int = 0,
    epochs: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    scale: float = 10.0,
) -> PhotoTagger:
    """One softmax regression per key on ``(n, dim)`` inputs; ``labels[key][i]`` is row i's value
    ("" unknown: the row does not train that key).  Values seen fewer than :data:`MIN_CLASS_COUNT`
    times are left out; a key with fewer than two classes left gets no classifier.  Full-batch
    Adam (the inputs are a few thousand unit vectors: seconds), fixed seed."""
    import torch

    feats = np.asarray(x, dtype=np.float32)
    if feats.ndim != 2:
        raise ValueError(f"expected (n, dim) inputs, got shape {feats.shape}")
    n, dim = feats.shape
    classifiers: list[AttributeClassifier] = []
    for key in sorted(labels):
        column = list(labels[key])
        if len(column) != n:
            raise ValueError(f"{len(column)} labels of {key!r} for {n} inputs")
        counts: dict[str, int] = {}
        for v in column:
            if v:
                counts[v] = counts.get(v, 0) + 1
        values = tuple(sorted(v for v, c in counts.items() if c >= MIN_CLASS_COUNT))
        if len(values) < 2:
            continue
        where = {v: i for i, v in enumerate(values)}
        rows = np.array([i for i, v in enumerate(column) if v in where], dtype=np.int64)
        target = torch.tensor([where[column[i]] for i in rows], dtype=torch.int64)
        inputs = torch.from_numpy(np.ascontiguousarray(feats[rows])) * scale
        # balanced: a rare value counts as much as a common one (the argmax must not be the majority)
        freq = torch.bincount(target, minlength=len(values)).float()
        class_weight = (freq.sum() / (len(values) * freq.clamp(min=1))).clamp(max=10.0)
        gen = torch.Generator().manual_seed(seed)
        linear = torch.nn.Linear(dim, len(values))
        with torch.no_grad():
            linear.weight.normal_(0.0, 0.01, generator=gen)
            linear.bias.zero_()
        opt = torch.optim.Adam(linear.parameters(), lr=lr, weight_decay=weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss(weight=class_weight)
        for _ in range(epochs):
            opt.zero_grad()
            loss = loss_fn(linear(inputs), target)
            loss.backward()
            opt.step()
        weight = (linear.weight.detach().numpy() * scale).astype(np.float32)
        bias = linear.bias.detach().numpy().astype(np.float32)
        classifiers.append(AttributeClassifier(key, values, weight, bias))
    return PhotoTagger(tuple(classifiers), dim)


def prediction_accuracy(
    predicted: Mapping[str, Sequence[str]], labels: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Per key of ``predicted``, the share of rows with a known label ("" unknown) predicted exactly."""
    out: dict[str, float] = {}
    for key, values in predicted.items():
        pairs = [(p, t) for p, t in zip(values, labels.get(key, ()), strict=False) if t]
        out[key] = round(sum(p == t for p, t in pairs) / len(pairs), 4) if pairs else 0.0
    return out


def save_tagger(folder: Path, tagger: PhotoTagger) -> dict[str, str]:
    """Write ``tagger.json`` + ``tagger.safetensors`` into ``folder``; returns {file: sha256}."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for c in tagger.classifiers:
        tensors[f"{c.key}.weight"] = torch.from_numpy(np.ascontiguousarray(c.weight))
        tensors[f"{c.key}.bias"] = torch.from_numpy(np.ascontiguousarray(c.bias))
    save_file(tensors, str(folder / TAGGER_WEIGHTS_FILE))
    os.chmod(folder / TAGGER_WEIGHTS_FILE, 0o644)  # safetensors writes 0600; services may run as another user
    doc: dict[str, Any] = {
        "format": TAGGER_FORMAT,
        "input": tagger.input,
        "dim": tagger.dim,
        "keys": {c.key: list(c.values) for c in tagger.classifiers},
        "validation_accuracy": dict(tagger.accuracy or {}),
    }
    (folder / TAGGER_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in (TAGGER_FILE, TAGGER_WEIGHTS_FILE)
    }


def load_tagger(folder: Path) -> PhotoTagger | None:
    """The tagger of a model version (None when the version has none)."""
    path = folder / TAGGER_FILE
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    doc = json.loads(path.read_text())
    if doc.get("format") != TAGGER_FORMAT:
        raise ValueError(f"{path}: unsupported format {doc.get('format')!r} (this code reads {TAGGER_FORMAT})")
    dim = int(doc["dim"])
    tensors = load_file(str(folder / TAGGER_WEIGHTS_FILE))
    classifiers = []
    for key, values in sorted((doc.get("keys") or {}).items()):
        weight = np.asarray(tensors[f"{key}.weight"], dtype=np.float32)
        bias = np.asarray(tensors[f"{key}.bias"], dtype=np.float32)
        if weight.shape != (len(values), dim) or bias.shape != (len(values),):
            raise ValueError(f"{path}: the weights of {key!r} do not match its {len(values)} values")
        classifiers.append(AttributeClassifier(str(key), tuple(str(v) for v in values), weight, bias))
    return PhotoTagger(tuple(classifiers), dim, str(doc.get("input", TAGGER_INPUT)), doc.get("validation_accuracy"))
