"""Static int8 EfficientNet-Lite0 features on the CPU through ONNX Runtime.

Why ONNX Runtime and not torch: torch's own static int8 path (FX graph mode, x86 and oneDNN
engines) measured slower than fp32 here (0.7-1.2x) and far off in quality (cosine 0.77-0.87 to
fp32), and its PT2E successor lives in torchao.  ONNX Runtime's QDQ int8 graph (per-channel weights,
per-tensor uint8 activations) runs ~4x faster than torch fp32 on these 2 cores (AVX512-VNNI).

The graph is built once per (weights, calibration photos, recipe, library versions): the fp32
feature network is exported to ONNX, activation ranges are calibrated on real photos in the views
the encoder feeds (min/max), and the quantized file is kept under ``<cache_dir>/efficientnet-lite0-int8/``
with its sha256 beside it, checked on every load (a truncated or edited file is rebuilt, never run).
The key's digest is part of the embedder's model id: vectors from two calibrations never mix.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import structlog
import torch
from PIL import Image

from prism.errors import PrismError

if TYPE_CHECKING:
    from prism.models.efficientnet import EfficientNetLite0

IMAGE_SIZE: Final = 224  # prism.models.efficientnet.IMAGE_SIZE (not imported: that module imports this one lazily)

log = structlog.get_logger(__name__)

# Bump when the export or quantization recipe changes: a new cache entry and a new model id.
RECIPE: Final = "qdq-perchannel-minmax-v1"


@functools.cache  # read /proc/cpuinfo once: every graph key and build asks
def has_vnni() -> bool:
    """Whether the CPU has VNNI (AVX512-VNNI or AVX-VNNI) int8 dot products.  Without it ONNX
    Runtime's u8s8 convolutions use VPMADDUBSW, whose 16-bit sums saturate (its quantization docs);
    measured on an AVX2-only EPYC: cosine to fp32 mean 0.82, min 0.48 with signed weights."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace").split()
    except OSError:
        return False  # unknown CPU: take the recipe that cannot saturate (u8u8)
    return "avx512_vnni" in flags or "avx_vnni" in flags


def recipe() -> str:
    """The quantization recipe for this CPU: unsigned 8-bit weights (u8u8) where VNNI is missing."""
    return RECIPE if has_vnni() else f"{RECIPE}-u8u8"


CALIBRATION_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".webp"})
_CALIBRATION_BATCH = 16


class CalibrationError(PrismError, ValueError):
    """No usable calibration photos: int8 cannot be built."""


class Int8Features:
    """A quantized feature network: ``(n, 3, 224, 224)`` normalised float32 -> ``(n, 1280)`` float32."""

    def __init__(self, path: Path, content_id: str, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One forward pass at a time per process (the encoders batch); match torch's thread count.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initializers etc. are noise here
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.content_id = content_id
        self.path = path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # The exported graph takes NCHW; .contiguous() turns a channels_last batch into it.
        batch = np.ascontiguousarray(x.detach().to(torch.float32).contiguous().numpy())
        out = self._session.run(None, {self._input: batch})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


def calibration_photos(folder: Path, count: int, *, pattern: str = "**/*") -> list[Path]:
    """``count`` photos spread evenly over the sorted files under ``folder`` matching ``pattern``
    (deterministic: the same folder gives the same photos, so the same graph and model id)."""
    if count < 1:
        raise CalibrationError(f"calibration photo count must be >= 1, got {count}")
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in CALIBRATION_SUFFIXES)
    if not files:
        raise CalibrationError(
            f"precision int8 needs calibration photos, found none under {folder} ({pattern}); "
            f"set PRISM_IMAGE_ENCODER_CALIBRATION_DIR to a folder of product photos"
        )
    if len(files) <= count:
        return files
    step = len(files) / count
    return [files[int(i * step)] for i in range(count)]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _weights_digest(model: EfficientNetLite0) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _build_key(model: EfficientNetLite0, photos: Sequence[Path]) -> str:
    import onnxruntime as ort

    h = hashlib.sha256()
    for part in (recipe(), torch.__version__, ort.__version__, _weights_digest(model)):
        h.update(part.encode() + b"\0")
    for p in photos:
        h.update(_sha256_file(p).encode() + b"\0")
    return h.hexdigest()


def _calibration_batches(photos: Sequence[Path]) -> Iterator[np.ndarray]:
    """Every calibration photo in every view the encoder feeds, normalised like the encoder does."""
    from prism.models.efficientnet import _normalise, preprocess_uint8
    from prism.models.views import VIEWS

    for start in range(0, len(photos), _CALIBRATION_BATCH):
        images = []
        for path in photos[start : start + _CALIBRATION_BATCH]:
            with Image.open(path) as im:
                im.load()
                images.append(im.copy())
        x = torch.stack([preprocess_uint8(images, view) for view in VIEWS], dim=1).flatten(0, 1)
        yield _normalise(x, torch.float32).contiguous().numpy()


class _Feed:
    """ONNX Runtime's CalibrationDataReader protocol (duck-typed: get_next returns None at the end)."""

    def __init__(self, name: str, photos: Sequence[Path]) -> None:
        self._name = name
        self._it = _calibration_batches(photos)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {self._name: batch}


class _Features(torch.nn.Module):
    def __init__(self, model: EfficientNetLite0) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _export(model: EfficientNetLite0, path: Path) -> None:
    """The fp32 feature network as ONNX (opset 17, dynamic batch), NCHW float32 224x224 input ``x``.

    The TF "SAME" pads are computed from the input size in Python, so tracing bakes them in for
    224x224: the only size the encoder feeds (preprocessing always crops to it).
    """
    import copy

    net = _Features(copy.deepcopy(model).to("cpu", torch.float32).to(memory_format=torch.contiguous_format)).eval()
    example = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with warnings.catch_warnings():
        # The TorchScript-based exporter (dynamo=False) needs no onnxscript; torch 2.14 flags it
        # deprecated.  Its tracer warns about the pad sizes becoming constants: intended (above).
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"Converting a tensor to a Python")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["x"],
            output_names=["features"],
            dynamic_axes={"x": {0: "n"}, "features": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )


def _quantize(fp32_path: Path, out: Path, photos: Sequence[Path], work: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "pre.onnx"
    # Shape inference and graph clean-up first, as ONNX Runtime's quantization docs ask.
    quant_pre_process(str(fp32_path), str(pre))
    quantize_static(
        str(pre),
        str(out),
        _Feed("x", photos),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        # u8u8 where VNNI is missing: no VPMADDUBSW, so no saturated sums
        weight_type=QuantType.QInt8 if recipe() == RECIPE else QuantType.QUInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


_built: dict[str, Int8Features] = {}
_built_lock = threading.Lock()


def build_int8(model: EfficientNetLite0, photos: Sequence[Path], cache_dir: Path) -> Int8Features:
    """The int8 feature network for ``model`` calibrated on ``photos``: from the cache when its
    checksum holds, else built (and cached) now.  One per process and key."""
    if not photos:
        raise CalibrationError("precision int8 needs calibration photos (PRISM_IMAGE_ENCODER_CALIBRATION_DIR)")
    key = _build_key(model, photos)
    threads = torch.get_num_threads()
    with _built_lock:
        done = _built.get(key)
        if done is not None:
            return done
        folder = cache_dir / "efficientnet-lite0-int8"
        path = folder / f"{key[:16]}.onnx"
        digest = folder / f"{key[:16]}.sha256"
        if path.is_file() and digest.is_file() and _sha256_file(path) == digest.read_text().strip():
            log.info("image_int8.reuse", path=str(path))
        else:
            t0 = time.perf_counter()
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                work = Path(tmp)
                _export(model, work / "fp32.onnx")
                _quantize(work / "fp32.onnx", work / "int8.onnx", photos, work)
                sha = _sha256_file(work / "int8.onnx")
                # Rename into place (atomic): two processes building at once both end with a whole file.
                os.replace(work / "int8.onnx", path)
            digest.write_text(sha + "\n")
            log.info("image_int8.built", path=str(path), photos=len(photos), seconds=round(time.perf_counter() - t0, 1))
        done = Int8Features(path, key[:10], threads)
        _built[key] = done
        return done
