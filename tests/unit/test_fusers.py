"""Fusion of shared-space vectors (constant mix, length gate), hybrid weights, and their files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prism.fusers import (
    FixedMix,
    LengthGate,
    RetrievalWeights,
    equal_mix,
    fuse_many,
    fuse_one,
    load_fuser,
    load_retrieval,
    save_fuser,
    save_retrieval,
)


def _unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_fixed_mix_renormalises_over_present_modalities() -> None:
    mix = FixedMix({"text": 0.8, "image": 0.2})
    present = np.array([[True, True], [False, True], [True, False]])
    w = mix.weights_many(present, np.zeros(3, dtype=np.float32))
    np.testing.assert_allclose(w, [[0.8, 0.2], [0.0, 1.0], [1.0, 0.0]], atol=1e-6)


def test_fixed_mix_columns_follow_the_canonical_order_whatever_the_file_says() -> None:
    assert FixedMix({"image": 0.3, "text": 0.7}).modalities == ("text", "image")


def test_fuse_one_returns_unit_vector_and_weights_of_what_is_there() -> None:
    text, image = _unit(1, 0, 0), _unit(0, 1, 0)
    vec, weights = fuse_one(FixedMix({"text": 0.75, "image": 0.25}), {"text": text, "image": image})
    assert weights == pytest.approx({"text": 0.75, "image": 0.25})
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(vec, _unit(0.75, 0.25, 0), atol=1e-6)
    only, w = fuse_one(equal_mix(), {"image": image})
    np.testing.assert_allclose(only, image, atol=1e-6)
    assert w == {"image": 1.0}


def test_length_gate_interpolates_in_log_length_and_clamps() -> None:
    gate = LengthGate(text_short=0.2, text_long=0.9, short_chars=20, long_chars=500)
    chars = np.array([0, 20, np.sqrt(21 * 501) - 1, 500, 10_000], dtype=np.float32)
    a = gate.text_weight(chars)
    np.testing.assert_allclose(a, [0.2, 0.2, 0.55, 0.9, 0.9], atol=1e-4)
    w = gate.weights_many(np.ones((5, 2), dtype=bool), chars)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    # a product with no text: the photo gets everything, whatever the gate says
    w0 = gate.weights_many(np.array([[False, True]]), np.array([0], dtype=np.float32))
    np.testing.assert_allclose(w0, [[0.0, 1.0]])


def test_fuse_many_matches_fuse_one() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(6, 2, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=2, keepdims=True)
    present = np.array([[1, 1], [1, 0], [0, 1], [1, 1], [1, 1], [0, 1]], dtype=bool)
    chars = np.array([5, 50, 0, 300, 2000, 0], dtype=np.float32)
    gate = LengthGate(0.3, 0.8)
    many = fuse_many(gate, vecs, present, chars)
    for i in range(6):
        given = {m: vecs[i, j] for j, m in enumerate(("text", "image")) if present[i, j]}
        one, _ = fuse_one(gate, given, int(chars[i]))
        np.testing.assert_allclose(many[i], one, atol=1e-6)


def test_fuser_files_round_trip_and_refuse_nonsense(tmp_path: Path) -> None:
    assert load_fuser(tmp_path) is None
    save_fuser(tmp_path, LengthGate(0.3, 0.8), {"val": 0.5})
    assert load_fuser(tmp_path) == LengthGate(0.3, 0.8)
    save_fuser(tmp_path, FixedMix({"text": 0.7, "image": 0.3}, kind="learned-mix"), {})
    assert load_fuser(tmp_path) == FixedMix({"text": 0.7, "image": 0.3}, kind="learned-mix")
    doc = json.loads((tmp_path / "fusion.json").read_text())
    for bad in ({"kind": "length-gate", "params": {"text_short": 2}}, {"kind": "fixed", "params": {}}, {"format": 9}):
        (tmp_path / "fusion.json").write_text(json.dumps({**doc, **bad}))
        with pytest.raises(ValueError):
            load_fuser(tmp_path)


def test_retrieval_weights_round_trip_and_validation(tmp_path: Path) -> None:
    assert load_retrieval(tmp_path) is None
    save_retrieval(tmp_path, RetrievalWeights({"shared": 1.0, "lexical": 0.5}, 60, {"val": 0.8}))
    got = load_retrieval(tmp_path)
    assert got is not None and dict(got.weights) == {"shared": 1.0, "lexical": 0.5} and got.rrf_k == 60
    (tmp_path / "retrieval.json").write_text(json.dumps({"weights": {"shared": -1}}))
    with pytest.raises(ValueError, match="non-negative"):
        load_retrieval(tmp_path)
    (tmp_path / "retrieval.json").write_text(json.dumps({"weights": {"shared": 1}, "rrf_k": 0}))
    with pytest.raises(ValueError, match="rrf_k"):
        load_retrieval(tmp_path)
