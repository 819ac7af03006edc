"""prism.training pure logic: group split, multi-positive InfoNCE, head files, colour features."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prism.catalog import Product
from prism.training.features import attribute_phrase, product_group
from prism.training.heads import (
    COLOUR_DIM,
    HeadConfig,
    ImageHead,
    colour_features,
    head_input,
    load_head,
    load_heads,
    project_image,
    save_head,
)
from prism.training.train import (
    multi_positive_infonce,
    positive_mask,
    read_id_file,
    split_by_group,
    symmetric_infonce,
)

pytestmark = pytest.mark.unit


# -- split -------------------------------------------------------------------------------------


def test_split_by_group_is_disjoint_deterministic_and_near_the_fraction() -> None:
    groups = [f"g{i // 3}" for i in range(3000)]  # 1000 groups of 3 rows
    held = split_by_group(groups, 0.2, seed=7)
    assert held.dtype == bool and held.shape == (3000,)
    held_groups = {g for g, h in zip(groups, held, strict=True) if h}
    kept_groups = {g for g, h in zip(groups, held, strict=True) if not h}
    assert held_groups.isdisjoint(kept_groups)
    assert 150 <= len(held_groups) <= 250
    assert np.array_equal(held, split_by_group(groups, 0.2, seed=7))
    # independent of row order
    rev = split_by_group(groups[::-1], 0.2, seed=7)
    assert np.array_equal(held, rev[::-1])
    # another seed holds out other groups
    assert not np.array_equal(held, split_by_group(groups, 0.2, seed=8))
    assert not split_by_group(groups, 0.0, seed=7).any()
    with pytest.raises(ValueError):
        split_by_group(groups, 1.0, seed=7)


def test_product_group_and_phrase() -> None:
    hm = Product(
        id="0111586001", title="t", attributes={"type": "Dress", "colour": "Light Blue", "product_code": "111"}
    )
    myntra = Product(id="1563", title="t", attributes={"type": "Tshirts", "colour": "Navy  Blue"})
    assert product_group(hm) == "product_code:111"
    assert product_group(myntra) == "id:1563"
    assert attribute_phrase(hm) == "light blue dress"
    assert attribute_phrase(myntra) == "navy blue tshirts"
    assert attribute_phrase(Product(id="x", title="t", attributes={"type": "Dress", "colour": "Unknown"})) == ""
    assert attribute_phrase(Product(id="x", title="t")) == ""


def test_read_id_file(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("# held out\n0123\n\n  456 \n")
    assert read_id_file(path) == {"0123", "456"}


# -- loss --------------------------------------------------------------------------------------


def test_positive_mask_matches_keys_and_never_negative_keys() -> None:
    keys = torch.tensor([3, 3, -1, 5, -2])
    mask = positive_mask(keys, keys)
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 1, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_multi_positive_infonce_single_positive_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 6)
    target = torch.tensor([0, 5, 2, 2])
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[torch.arange(4), target] = True
    expected = torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(multi_positive_infonce(logits, mask), expected, atol=1e-6)


def test_multi_positive_infonce_sums_positives_inside_the_log() -> None:
    logits = torch.tensor([[2.0, 2.0, 0.0], [0.0, 1.0, 3.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])  # second row: no positive, skipped
    got = multi_positive_infonce(logits, mask)
    e = math.exp
    want = -math.log((e(2) + e(2)) / (e(2) + e(2) + e(0)))
    assert got.item() == pytest.approx(want, rel=1e-5)
    # no positives anywhere: zero, and still differentiable
    z = torch.zeros(2, 2, requires_grad=True)
    out = multi_positive_infonce(z, torch.zeros(2, 2, dtype=torch.bool))
    out.backward()  # type: ignore[no-untyped-call]
    assert out.item() == 0.0


def test_symmetric_infonce_is_low_when_aligned_and_high_when_not() -> None:
    eye = torch.eye(8, dtype=torch.bool)
    aligned = symmetric_infonce(20.0 * torch.eye(8), eye)
    shuffled = symmetric_infonce(
        20.0 * torch.eye(8)[torch.randperm(8, generator=torch.Generator().manual_seed(1))], eye
    )
    assert aligned.item() < 1e-6
    assert shuffled.item() > 5.0
    # an extra positive (same type and colour) removes the penalty of confusing the two
    logits = torch.tensor([[5.0, 5.0], [5.0, 5.0]])
    assert symmetric_infonce(logits, torch.ones(2, 2, dtype=torch.bool)).item() == pytest.approx(0.0, abs=1e-6)
    assert symmetric_infonce(logits, torch.eye(2, dtype=torch.bool)).item() == pytest.approx(math.log(2), rel=1e-6)


# -- head files --------------------------------------------------------------------------------


def _config() -> HeadConfig:
    return HeadConfig(image_model="img", text_model="txt", image_dim=16, colour_dim=COLOUR_DIM, out_dim=8, hidden=12)


def test_head_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    head = ImageHead(_config())
    head.set_input_stats(torch.rand(head.config.in_dim), torch.rand(head.config.in_dim) + 0.5)
    x = np.random.default_rng(0).standard_normal((5, head.config.in_dim)).astype(np.float32)
    before = project_image(head, x)
    files = save_head(tmp_path / "v1", head)
    assert set(files) == {"image_head.safetensors", "image_head.json"}
    loaded = load_head(tmp_path / "v1")
    assert loaded.config == head.config
    after = project_image(loaded, x)
    assert after.shape == (5, 8) and after.dtype == np.float32
    np.testing.assert_array_equal(before, after)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, rtol=1e-5)
    # the layout `prism train` writes: manifest.json naming the current version
    models = tmp_path / "models"
    save_head(models / "versions" / "v1", head)
    (models / "manifest.json").write_text(json.dumps({"current": "v1"}))
    heads = load_heads(models)
    assert heads.version == "v1"
    np.testing.assert_array_equal(project_image(heads, x), before)
    with pytest.raises(ValueError):
        project_image(heads, x[:, :-1])


def test_load_heads_refuses_missing_or_escaping_versions(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_heads(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"current": "../elsewhere"}))
    with pytest.raises(ValueError):
        load_heads(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"current": "nope"}))
    with pytest.raises(FileNotFoundError):
        load_heads(tmp_path)


def test_head_input_picks_and_averages_the_trained_views() -> None:
    cfg = HeadConfig(image_model="i", text_model="t", image_dim=4, out_dim=8, views=("center",))
    views = np.zeros((2, 3, 4), dtype=np.float32)
    views[:, 1, 0] = 1.0  # centre view
    views[:, 0, 1] = 1.0
    colour = np.full((2, COLOUR_DIM), 0.5, dtype=np.float32)
    x = head_input(views, colour, cfg, ("full", "center", "zoom"))
    assert x.shape == (2, 4 + COLOUR_DIM)
    np.testing.assert_array_equal(x[:, :4], [[1, 0, 0, 0], [1, 0, 0, 0]])
    both = HeadConfig(image_model="i", text_model="t", image_dim=4, out_dim=8, views=("full", "center"))
    x2 = head_input(views, colour, both, ("full", "center", "zoom"))
    np.testing.assert_allclose(x2[0, :4], [2**-0.5, 2**-0.5, 0, 0], rtol=1e-6)
    with pytest.raises(ValueError):
        head_input(views[:, 0], colour, both, ("full",))


# -- colour features ---------------------------------------------------------------------------


def _product_shot(colour: tuple[int, int, int]) -> Image.Image:
    im = Image.new("RGB", (160, 240), (255, 255, 255))
    im.paste(Image.new("RGB", (80, 140), colour), (40, 50))
    return im


def test_colour_features_see_the_product_not_the_background() -> None:
    red = colour_features(_product_shot((200, 20, 20)))
    blue = colour_features(_product_shot((20, 40, 200)))
    black = colour_features(_product_shot((10, 10, 10)))
    for f in (red, blue, black):
        assert f.shape == (COLOUR_DIM,) and f.dtype == np.float32 and np.isfinite(f).all()
    # mean RGB of the foreground, not the white background
    mean = slice(COLOUR_DIM - 7, COLOUR_DIM - 4)
    assert red[mean][0] > 0.7 and red[mean][2] < 0.2
    assert blue[mean][2] > 0.7 and blue[mean][0] < 0.2
    assert black[mean].max() < 0.1
    # histograms of different colours share no bin
    hist = slice(0, COLOUR_DIM - 7)
    assert float(red[hist] @ blue[hist]) < 0.05
    assert float(red[hist] @ red[hist]) == pytest.approx(1.0, rel=1e-3)
    # a plain frame (nothing differs from the border) still gives a valid histogram of the frame
    plain = colour_features(Image.new("RGB", (50, 50), (0, 128, 0)))
    assert float(plain[hist] @ plain[hist]) == pytest.approx(1.0, rel=1e-3)
