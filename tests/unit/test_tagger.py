"""The photo tagger: attributes predicted from a product's photo vector (prism.tagger)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prism.tagger import MIN_CLASS_COUNT, PhotoTagger, fit_tagger, load_tagger, prediction_accuracy, save_tagger


def _clusters(rng: np.random.Generator, n: int, dim: int = 16) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Unit vectors around one centre per (colour, type); labels say which."""
    colours, kinds = ["red", "blue", "green"], ["dress", "shirt"]
    centres = rng.normal(size=(6, dim))
    rows: list[np.ndarray] = []
    labels: dict[str, list[str]] = {"colour": [], "type": []}
    for i in range(n):
        lab = i % 6
        rows.append(centres[lab] + 0.3 * rng.normal(size=dim))
        labels["colour"].append(colours[lab % 3])
        labels["type"].append(kinds[lab // 3])
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def test_the_tagger_learns_each_key_and_predicts_unseen_rows() -> None:
    rng = np.random.default_rng(0)
    x, labels = _clusters(rng, 240)
    tagger = fit_tagger(x[:180], {k: v[:180] for k, v in labels.items()})
    assert tagger.keys == ("colour", "type") and tagger.dim == 16
    acc = prediction_accuracy(tagger.predict_columns(x[180:]), {k: v[180:] for k, v in labels.items()})
    assert acc["colour"] > 0.9 and acc["type"] > 0.9, acc
    assert prediction_accuracy({"type": ["a", "b", "c"]}, {"type": ["a", "", "x"]}) == {"type": 0.5}
    rows = tagger.predict(x[180:])
    assert tagger.predict(x[180]) == rows[:1] and set(rows[0]) == {"colour", "type"}
    assert tagger.predict_columns(x[180:]) == {k: [r[k] for r in rows] for k in ("colour", "type")}
    with pytest.raises(ValueError, match="reads"):
        tagger.predict(np.zeros((1, 8), dtype=np.float32))


def test_rare_values_unknown_labels_and_single_class_keys_are_left_out() -> None:
    rng = np.random.default_rng(1)
    x, labels = _clusters(rng, 60)
    labels["colour"][:3] = ["purple"] * 3  # fewer than MIN_CLASS_COUNT: not a class
    labels["type"][:10] = [""] * 10  # unknown: those rows do not train "type"
    labels["season"] = ["summer"] * 60  # one value: nothing to tell apart
    assert 3 < MIN_CLASS_COUNT
    tagger = fit_tagger(x, labels)
    by_key = {c.key: c.values for c in tagger.classifiers}
    assert set(by_key) == {"colour", "type"}
    assert "purple" not in by_key["colour"] and by_key["type"] == ("dress", "shirt")
    with pytest.raises(ValueError, match="labels"):
        fit_tagger(x, {"colour": labels["colour"][:10]})


def test_a_saved_tagger_loads_and_predicts_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x, labels = _clusters(rng, 120)
    tagger = fit_tagger(x, labels)
    tagger = PhotoTagger(tagger.classifiers, tagger.dim, accuracy={"colour": 1.0, "type": 1.0})
    files = save_tagger(tmp_path, tagger)
    assert set(files) == {"tagger.json", "tagger.safetensors"}
    loaded = load_tagger(tmp_path)
    assert loaded is not None and loaded.keys == tagger.keys and loaded.accuracy == {"colour": 1.0, "type": 1.0}
    assert loaded.predict(x) == tagger.predict(x)
    assert load_tagger(tmp_path / "missing") is None
    (tmp_path / "tagger.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="unsupported format"):
        load_tagger(tmp_path)


def test_the_fusion_core_writes_the_predictions_and_refuses_a_tagger_of_other_encoders() -> None:
    from prism.fusion import FusionCore, ProductUpdate, VectorLayout
    from prism.index import IndexSettings, ProductIndex

    rng = np.random.default_rng(4)
    x, labels = _clusters(rng, 120)
    tagger = fit_tagger(x, labels)
    layout = VectorLayout.for_encoders(16, 8, False, shared_dim=16)
    core = FusionCore(ProductIndex.open(IndexSettings(collection="tagged")), layout, model_id="t", tagger=tagger)
    photo = x[:1]
    update = ProductUpdate(
        "p1",
        {"title": "", "images": ["a.jpg"]},
        content_hash="h",
        modalities={"image": np.ones((1, 8), np.float32), "image_shared": photo},
    )
    assert core.upsert([update]) == 1
    payload = core.index.payloads(["p1"], fields=["predicted"])["p1"]
    assert payload["predicted"] == tagger.predict(photo)[0]
    # a text-only product has no photo to read: no predictions
    core.upsert([ProductUpdate("p2", {"title": "Red dress"}, "h2", modalities={"text": x[:1]})])
    assert "predicted" not in core.index.payloads(["p2"], fields=["predicted"])["p2"]
    with pytest.raises(ValueError, match="photo tagger reads 16-dimensional"):
        FusionCore(
            ProductIndex.open(IndexSettings(collection="other")),
            VectorLayout.for_encoders(32, 8, False, shared_dim=32),
            model_id="t",
            tagger=tagger,
        )
