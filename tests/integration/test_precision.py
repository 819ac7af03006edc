"""Each encoder precision loads and gives vectors close to fp32 on real catalog texts and photos.

Thresholds are set below what was measured (README, "Encoder precision"): text bf16 cosine to fp32
>= 0.9999, int8 >= 0.994; image bf16 mean 0.998 (min 0.98), int8 mean ~0.99 (min ~0.93).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prism.catalog import Catalog
from prism.models import efficientnet_int8
from prism.models.efficientnet import ImageEmbedder, load_image_embedder
from prism.models.efficientnet_int8 import CalibrationError, build_int8, calibration_photos
from prism.models.precision import PrecisionError
from prism.models.text import TextEmbedder, load_text_embedder
from prism.settings import CommonSettings

pytestmark = pytest.mark.integration

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

QUERIES = ["black ankle boots", "blue summer dress", "蓝色连衣裙", "黑色皮靴", "men's white sneakers", "红色手提包"]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def catalogs(shared_data: Path) -> list[Catalog]:
    return [Catalog.open(shared_data / "catalogs" / name) for name in ("myntra", "hm")]


@pytest.fixture(scope="module")
def passages(catalogs: list[Catalog]) -> list[str]:
    # short Myntra titles and long H&M descriptions (up to the 256-token limit)
    return [p.text() for c in catalogs for p in itertools.islice(c.products(), 3, 400, 25)]


@pytest.fixture(scope="module")
def photos(catalogs: list[Catalog]) -> list[Image.Image]:
    out = []
    for c in catalogs:
        for p in itertools.islice((p for p in c.products() if p.images), 11, 400, 40):
            with Image.open(c.media_path(p.images[0])) as im:
                out.append(im.convert("RGB"))
    return out


@pytest.fixture(scope="module")
def e5_fp32(cache_dir: Path) -> TextEmbedder:
    return load_text_embedder("e5-small", cache_dir)


@pytest.mark.parametrize(("precision", "floor"), [("bf16", 0.9999), ("int8", 0.99)])
def test_text_precision_stays_close_to_fp32(
    e5_fp32: TextEmbedder, cache_dir: Path, passages: list[str], precision: str, floor: float
) -> None:
    emb = load_text_embedder("e5-small", cache_dir, precision=precision)  # type: ignore[arg-type]
    assert emb.model_id == f"multilingual-e5-small-q4@{precision}" != e5_fp32.model_id
    for kind, texts in (("passage", passages), ("query", QUERIES)):
        ours = emb.embed(texts, kind)  # type: ignore[arg-type]
        assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-4)
        cos = _cosines(ours, e5_fp32.embed(texts, kind))  # type: ignore[arg-type]
        assert cos.min() >= floor, (kind, float(cos.min()))
    # retrieval order kept on a real pair
    q = emb.embed(["blue dress", "蓝色连衣裙"], "query")
    p = emb.embed(["a blue summer dress", "black leather boots"], "passage")
    s = q @ p.T
    assert s[0, 0] > s[0, 1] and s[1, 0] > s[1, 1], s


def test_text_fp16_on_the_cpu_is_refused_before_loading(tmp_path: Path) -> None:
    # an empty cache folder: refusing must come before minutes of e5 conversion
    with pytest.raises(PrecisionError, match="fp16 needs a CUDA device"):
        load_text_embedder("e5-small", tmp_path, device="cpu", precision="fp16")
    assert not any(tmp_path.iterdir())


def test_image_bf16_stays_close_to_fp32(photos: list[Image.Image]) -> None:
    fp32 = load_image_embedder(device="cpu")
    bf16 = load_image_embedder(device="cpu", precision="bf16")
    assert bf16.model_id == "efficientnet-lite0-imagenet@bf16" != fp32.model_id
    assert bf16.model is not fp32.model  # its own bfloat16 copy: the fp32 embedder is untouched
    a, b = fp32.embed_views(photos), bf16.embed_views(photos)
    assert b.dtype == np.float32 and b.shape == a.shape
    cos = _cosines(a, b)
    assert cos.min() >= 0.97 and cos.mean() >= 0.997, (float(cos.min()), float(cos.mean()))


@pytest.fixture(scope="module")
def int8(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> ImageEmbedder:
    """Calibrated on 16 product photos of both catalogs (the service default is 64), built into a
    fresh cache folder."""
    calibration = calibration_photos(shared_data / "catalogs", 16, pattern="*/images/*")
    cache = tmp_path_factory.mktemp("int8-cache")
    return load_image_embedder(device="cpu", precision="int8", calibration=calibration, cache_dir=cache)


def test_image_int8_stays_close_to_fp32(int8: ImageEmbedder, photos: list[Image.Image]) -> None:
    fp32 = load_image_embedder(device="cpu")
    assert int8.model_id.startswith("efficientnet-lite0-imagenet@int8-")
    a, b = fp32.embed_views(photos), int8.embed_views(photos)
    assert b.dtype == np.float32 and b.shape == a.shape
    cos = _cosines(a, b)
    # 16 calibration photos here (64 in the service: mean 0.985-0.995 measured there)
    assert cos.min() >= 0.85 and cos.mean() >= 0.97, (float(cos.min()), float(cos.mean()))
    # nearest neighbours mostly survive: each photo's centre view finds its own fp32 vector
    centre_a, centre_b = a[:, 1], b[:, 1]
    assert np.mean((centre_b @ centre_a.T).argmax(axis=1) == np.arange(len(photos))) >= 0.95


def test_image_int8_classifies_like_fp32(int8: ImageEmbedder) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    coffee = Image.fromarray(skimage_data.coffee())
    assert int(int8.classify([coffee])[0].argmax()) == 967  # espresso


def test_int8_graph_is_cached_checked_and_rebuilt_when_damaged(
    int8: ImageEmbedder, shared_data: Path, tmp_path: Path
) -> None:
    calibration = calibration_photos(shared_data / "catalogs", 4, pattern="*/images/*")
    base = int8.model
    first = build_int8(base, calibration, tmp_path)
    digest = first.path.with_suffix(".sha256").read_text().strip()
    efficientnet_int8._built.clear()  # as a new process would: only the files are left
    again = build_int8(base, calibration, tmp_path)
    assert again.path == first.path and again.content_id == first.content_id
    first.path.write_bytes(first.path.read_bytes()[:1000])  # truncated on disk
    efficientnet_int8._built.clear()
    rebuilt = build_int8(base, calibration, tmp_path)
    assert efficientnet_int8._sha256_file(rebuilt.path) == digest
    # other calibration photos: another graph and another model id
    other = build_int8(base, calibration[:2], tmp_path)
    assert other.content_id != first.content_id


def test_image_precisions_refused_where_they_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(PrecisionError, match="fp16 needs a CUDA device"):
        load_image_embedder(device="cpu", precision="fp16")
    with pytest.raises(CalibrationError, match="calibration photos"):
        load_image_embedder(device="cpu", precision="int8", calibration=[], cache_dir=tmp_path)


def test_services_name_the_precision_and_video_follows_image(
    monkeypatch: pytest.MonkeyPatch, common_settings: CommonSettings
) -> None:
    from services.image_encoder import model as image_model
    from services.image_encoder.server import make_backend
    from services.image_encoder.settings import Settings as ImageSettings
    from services.video_encoder import model as video_model
    from services.video_encoder.settings import Settings as VideoSettings

    monkeypatch.setenv("PRISM_IMAGE_ENCODER_PRECISION", "bf16")
    settings = ImageSettings()
    backend = make_backend(image_model.load(settings, common_settings), settings)
    assert backend.model_id == "efficientnet-lite0-imagenet@bf16"
    video = video_model.load(VideoSettings(), common_settings)
    assert video.image.model_id == "efficientnet-lite0-imagenet@bf16"
    assert video_model.load(VideoSettings(), common_settings, image_precision="fp32").image.model_id == (
        "efficientnet-lite0-imagenet"
    )


def test_device_bench_compares_each_precision_with_cpu_fp32(photos: list[Image.Image]) -> None:
    from prism.bench_device import run

    # One pass of the network alone: on a CPU without native bf16 (AVX2) each bf16 pass is ~13x slower.
    result = run(photos[:8], "cpu", [4], repeats=1, network_repeats=1)
    assert set(result["precisions"]) == {"fp32", "bf16"}  # fp16 is GPU-only
    fp32, bf16 = (result["precisions"][p]["batch_4"] for p in ("fp32", "bf16"))
    assert fp32["cosine_min"] > 0.9999  # the same network on the same device
    assert 0.99 < bf16["cosine_mean"] < 1.0
    assert min(fp32["photos_per_s"], fp32["network_images_per_s"], result["cpu_fp32_photos_per_s"]) > 0
    threads = result["preprocess_threads"]  # a CPU keeps one thread by default: only that is timed
    assert threads["precision"] == "fp32" and len(threads["photos_per_s_1"]) == 2
