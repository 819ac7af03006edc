"""EfficientNet-Lite0 image embedder with the real packaged ImageNet weights (CPU is enough)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from prism.media.images import decode_image
from prism.models.efficientnet import (
    EfficientNetLite0,
    ImageEmbedder,
    _same_pad,
    load_image_embedder,
    load_state_dict,
)

pytestmark = pytest.mark.integration

skimage_data = pytest.importorskip("skimage.data")

ESPRESSO = 967
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def embedder() -> ImageEmbedder:
    return load_image_embedder()


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return Image.fromarray(skimage_data.coffee())


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return Image.fromarray(skimage_data.chelsea())


@pytest.fixture(scope="module")
def others() -> list[Image.Image]:
    return [
        Image.fromarray(skimage_data.astronaut()),
        Image.fromarray(skimage_data.rocket()),
        Image.fromarray(skimage_data.camera()).convert("RGB"),
    ]


def test_tf_same_padding_is_asymmetric() -> None:
    assert _same_pad(224, 3, 2) == (0, 1)  # stem: the extra row/column goes bottom/right
    assert _same_pad(56, 5, 2) == (1, 2)
    assert _same_pad(112, 3, 1) == (1, 1)
    assert _same_pad(225, 3, 2) == (1, 1)


def test_weights_load_strictly() -> None:
    model = EfficientNetLite0()
    load_state_dict(model)  # strict=True: raises on any missing/unexpected key
    n_params = sum(p.numel() for p in model.parameters())
    assert 4_500_000 < n_params < 5_000_000  # Lite0: 4.65 M


def test_loaded_once(embedder: ImageEmbedder) -> None:
    assert load_image_embedder() is embedder
    assert embedder.model_id == "efficientnet-lite0-imagenet"
    assert embedder.dim == 1280


def test_coffee_is_espresso(embedder: ImageEmbedder, coffee: Image.Image) -> None:
    probs = embedder.classify([coffee])
    assert probs.shape == (1, 1000)
    assert probs.dtype == np.float32
    assert abs(float(probs.sum()) - 1.0) < 1e-4
    assert int(probs[0].argmax()) == ESPRESSO
    assert probs[0, ESPRESSO] > 0.8  # 0.957 with fp32 on CPU


def test_chelsea_is_a_cat(embedder: ImageEmbedder, cat: Image.Image) -> None:
    assert int(embedder.classify([cat])[0].argmax()) in CATS


def test_decoded_jpeg_still_espresso(embedder: ImageEmbedder, coffee: Image.Image) -> None:
    buf = io.BytesIO()
    coffee.save(buf, "JPEG", quality=90)
    assert int(embedder.classify([decode_image(buf.getvalue())])[0].argmax()) == ESPRESSO


def test_embed_shape_dtype_norm(
    embedder: ImageEmbedder, coffee: Image.Image, cat: Image.Image, others: list[Image.Image]
) -> None:
    vectors = embedder.embed([coffee, cat, *others])
    assert vectors.shape == (5, 1280)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 1280)
    assert embedder.classify([]).shape == (0, 1000)


def test_same_image_same_vector(embedder: ImageEmbedder, coffee: Image.Image) -> None:
    first = embedder.embed([coffee])
    second = embedder.embed([coffee.copy()])
    np.testing.assert_array_equal(first, second)
    pair = embedder.embed([coffee, coffee])
    np.testing.assert_allclose(pair[0], pair[1], atol=1e-6)


def test_flip_is_close_unrelated_is_far(
    embedder: ImageEmbedder, coffee: Image.Image, cat: Image.Image, others: list[Image.Image]
) -> None:
    v = embedder.embed([cat, ImageOps.mirror(cat), coffee, *others])
    flipped = float(v[0] @ v[1])
    unrelated = max(float(v[0] @ u) for u in v[2:])
    assert flipped > 0.8
    assert unrelated < flipped - 0.3


def test_batch_size_does_not_change_vectors(coffee: Image.Image, cat: Image.Image, others: list[Image.Image]) -> None:
    images = [coffee, cat, *others]
    one_by_one = load_image_embedder(batch_size=1)
    in_one_batch = load_image_embedder(batch_size=32)
    assert one_by_one.model is in_one_batch.model  # the weights are shared, loaded once
    singles = one_by_one.embed(images)
    batched = in_one_batch.embed(images)
    np.testing.assert_allclose(singles, batched, atol=1e-4)
    np.testing.assert_allclose(one_by_one.embed([cat])[0], batched[1], atol=1e-4)
    two_batches = ImageEmbedder(in_one_batch.model, device=in_one_batch.device, batch_size=2)
    np.testing.assert_allclose(two_batches.embed(images), batched, atol=1e-4)


def test_preprocess(embedder: ImageEmbedder, cat: Image.Image) -> None:
    grey = Image.new("L", (160, 240), 127)  # a catalog-sized greyscale image
    x = embedder.preprocess([cat, grey])
    assert x.shape == (2, 3, 224, 224)
    assert x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert float(x.min()) >= -127 / 128 and float(x.max()) <= 1.0
    assert torch.all(x[1] == 0)  # (127 - 127) / 128
    clear = embedder.preprocess([Image.new("RGBA", (300, 200), (0, 0, 0, 0))])
    assert torch.all(clear == 1.0)  # transparent -> white (255 - 127) / 128, as decode_image does


def test_preprocess_matches_resize_then_center_crop(embedder: ImageEmbedder, cat: Image.Image) -> None:
    # the reference pipeline: resize the shorter side to 256 (torchvision's integer sizes), crop 224
    w, h = cat.size  # 451 x 300
    resized = cat.resize((int(256 * w / h), 256), Image.Resampling.BILINEAR)
    left = int(round((resized.width - 224) / 2))
    top = int(round((resized.height - 224) / 2))
    ref = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    ours = embedder.preprocess([cat])[0].permute(1, 2, 0).numpy() * 128 + 127
    assert np.abs(ours - ref).max() <= 1.0 + 1e-3  # at most one grey level of resampling rounding


def test_bf16_precision_option(coffee: Image.Image, cat: Image.Image, others: list[Image.Image]) -> None:
    images = [coffee, cat, *others]
    fp32 = load_image_embedder(device="cpu")
    bf16 = load_image_embedder(device="cpu", precision="bf16")
    # its own bfloat16 copy of the weights (faster than autocast, which re-casts them every call)
    assert bf16.model is not fp32.model and next(bf16.model.parameters()).dtype == torch.bfloat16
    assert next(fp32.model.parameters()).dtype == torch.float32
    a, b = fp32.embed(images), bf16.embed(images)
    assert b.dtype == np.float32
    cosine = np.sum(a * b, axis=1)
    assert cosine.min() > 0.99
    assert int(bf16.classify([coffee])[0].argmax()) == ESPRESSO


def test_views_resized_in_threads_are_the_same_pixels_and_vectors(
    coffee: Image.Image, cat: Image.Image, others: list[Image.Image]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from prism.models.efficientnet import preprocess_uint8, preprocess_views_uint8
    from prism.models.views import VIEWS

    images = [coffee, cat, *others]
    with ThreadPoolExecutor(3) as pool:
        threaded = preprocess_views_uint8(images, VIEWS, pool)
    # image-major rows, as embed_views has always ordered them
    reference = torch.stack([preprocess_uint8(images, view) for view in VIEWS], dim=1).flatten(0, 1)
    assert torch.equal(threaded, reference) and torch.equal(preprocess_views_uint8(images, VIEWS), reference)

    serial = load_image_embedder(batch_size=4, preprocess_threads=1)
    parallel = load_image_embedder(batch_size=4, preprocess_threads=3)
    assert parallel is not serial and parallel.model is serial.model and parallel.preprocess_threads == 3
    np.testing.assert_array_equal(parallel.embed_views(images), serial.embed_views(images))
    # Embedders that differ only in how they feed the network share it (no second bfloat16 copy)
    bf16 = load_image_embedder(batch_size=4, precision="bf16", preprocess_threads=1)
    assert load_image_embedder(batch_size=8, precision="bf16", preprocess_threads=2).model is bf16.model
    assert bf16.model is not serial.model
    with pytest.raises(ValueError, match="preprocess_threads"):
        ImageEmbedder(serial.model, device=serial.device, preprocess_threads=0)
