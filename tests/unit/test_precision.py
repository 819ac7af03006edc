"""Encoder precision settings: values, model ids, where each may run, calibration photo choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from prism.models.efficientnet_int8 import CalibrationError, calibration_photos
from prism.models.precision import PRECISIONS, PrecisionError, check_device, tagged_model_id
from prism.vector_cache import vector_key
from services.image_encoder.settings import Settings as ImageSettings
from services.text_encoder.settings import Settings as TextSettings

pytestmark = pytest.mark.unit


def test_fp32_keeps_the_plain_id_and_every_other_precision_gets_its_own() -> None:
    ids = {p: tagged_model_id("multilingual-e5-small-q4", p) for p in PRECISIONS}  # type: ignore[arg-type]
    assert ids["fp32"] == "multilingual-e5-small-q4"  # vectors cached before precisions existed stay valid
    assert ids["bf16"] == "multilingual-e5-small-q4@bf16"
    assert len(set(ids.values())) == len(PRECISIONS)
    # ... so the vector cache keys differ and the vectors of two precisions never mix
    keys = {vector_key(i, (384,), "passage", "blue dress") for i in ids.values()}
    assert len(keys) == len(PRECISIONS)


def test_fp16_needs_cuda_and_int8_the_cpu() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for p in ("fp32", "bf16", "int8"):
        check_device(p, cpu, what="text model")
    for p in ("fp32", "bf16", "fp16"):
        check_device(p, cuda, what="text model")
    with pytest.raises(PrecisionError, match="fp16 needs a CUDA device.*use bf16"):
        check_device("fp16", cpu, what="text model")
    with pytest.raises(PrecisionError, match="int8 runs on the CPU only"):
        check_device("int8", cuda, what="image model")
    with pytest.raises(PrecisionError, match="unknown precision"):
        check_device("fp8", cpu, what="image model")  # type: ignore[arg-type]


def test_settings_read_the_precision_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRISM_TEXT_ENCODER_PRECISION", raising=False)
    monkeypatch.delenv("PRISM_IMAGE_ENCODER_PRECISION", raising=False)
    assert TextSettings().precision == "fp32" and ImageSettings().precision == "fp32"
    monkeypatch.setenv("PRISM_TEXT_ENCODER_PRECISION", "bf16")
    monkeypatch.setenv("PRISM_IMAGE_ENCODER_PRECISION", "int8")
    assert TextSettings().precision == "bf16"
    assert ImageSettings().precision == "int8"
    # the video encoder builds its image network from the image encoder's settings (video follows image)
    assert ImageSettings(max_batch=48, threads=None).precision == "int8"


@pytest.mark.parametrize("env", ["PRISM_TEXT_ENCODER_PRECISION", "PRISM_IMAGE_ENCODER_PRECISION"])
@pytest.mark.parametrize("bad", ["int4", "FP32", "float16", ""])
def test_a_bad_precision_is_a_settings_error_naming_the_valid_values(
    monkeypatch: pytest.MonkeyPatch, env: str, bad: str
) -> None:
    monkeypatch.setenv(env, bad)
    with pytest.raises(ValidationError) as err:
        TextSettings() if env.startswith("PRISM_TEXT") else ImageSettings()
    message = str(err.value)
    assert "precision" in message
    assert all(f"'{p}'" in message for p in PRECISIONS), message


def test_calibration_photo_count_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISM_IMAGE_ENCODER_CALIBRATION_PHOTOS", "0")
    with pytest.raises(ValidationError, match="calibration_photos"):
        ImageSettings()


def test_calibration_photos_are_spread_evenly_and_deterministic(tmp_path: Path) -> None:
    for shop in ("a", "b"):
        (tmp_path / shop / "images").mkdir(parents=True)
        for i in range(10):
            (tmp_path / shop / "images" / f"{i:02d}.jpg").write_bytes(b"x")
        (tmp_path / shop / "images" / "notes.txt").write_text("not a photo")
    picked = calibration_photos(tmp_path, 4, pattern="*/images/*")
    assert picked == calibration_photos(tmp_path, 4, pattern="*/images/*")
    assert [p.relative_to(tmp_path).as_posix() for p in picked] == [
        "a/images/00.jpg",
        "a/images/05.jpg",
        "b/images/00.jpg",
        "b/images/05.jpg",
    ]
    assert len(calibration_photos(tmp_path, 100)) == 20  # fewer photos than asked for: all of them


def test_no_calibration_photos_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="PRISM_IMAGE_ENCODER_CALIBRATION_DIR"):
        calibration_photos(tmp_path, 8)


def test_eval_takes_the_precision_flags() -> None:
    from prism.cli import build_parser

    args = build_parser().parse_args(
        ["eval", "--catalog", "c", "--queries", "q", "--text-precision", "bf16", "--image-precision", "int8"]
    )
    assert (args.text_precision, args.image_precision) == ("bf16", "int8")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--catalog", "c", "--queries", "q", "--image-precision", "int4"])


def test_feature_extraction_uses_bf16_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from prism.models.precision import fast_cpu_precision

    for avx512_bf16, amx, expected in [(False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16")]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert fast_cpu_precision() == expected
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert fast_cpu_precision() == "fp32"  # a build without the probes: the safe choice


def test_int8_image_graph_uses_unsigned_weights_where_the_cpu_lacks_vnni(monkeypatch: pytest.MonkeyPatch) -> None:
    from prism.models import efficientnet_int8

    monkeypatch.setattr(efficientnet_int8, "has_vnni", lambda: True)
    assert efficientnet_int8.recipe() == efficientnet_int8.RECIPE
    monkeypatch.setattr(efficientnet_int8, "has_vnni", lambda: False)
    # another recipe is another graph key, so another model id: vectors of the two never mix
    assert efficientnet_int8.recipe() == f"{efficientnet_int8.RECIPE}-u8u8"
