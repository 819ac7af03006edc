"""CLIP-style dual encoders (CLIP, Chinese-CLIP, SigLIP) from a local transformers checkpoint folder.

One loaded model serves two embedders that drop in for the existing ones:

* :class:`ClipTextEmbedder` has the interface of :class:`prism.models.text.TextEmbedder`
  (``embed(texts, kind)``; ``kind`` is validated but changes nothing: CLIP has no query/passage
  prefixes).
* :class:`ClipImageEmbedder` has the interface of :class:`prism.models.efficientnet.ImageEmbedder`
  (``embed(images)``, ``embed_views(images, views)``).

Both return float32 rows of unit L2 norm in the same ``dim``-dimensional space, so a text vector and
an image vector compare by a dot product (the model's own logits are that cosine times
``exp(logit_scale)``, plus ``logit_bias`` for SigLIP).

The folder is what ``save_pretrained`` writes: ``config.json`` (``model_type`` "clip",
"chinese_clip" or "siglip"), the weights, the tokenizer files and, optionally, the image
preprocessing (``preprocessor_config.json``, or ``processor_config.json`` with an
``"image_processor"`` entry, as transformers 5 writes for a whole processor).  Without either, the
defaults of transformers' own image processor for that model type apply (for CLIP: shorter side to
the model's image size, bicubic, centre crop, OpenAI CLIP mean/std unless config.json names
``image_mean``/``image_std``).

Image preprocessing is PIL + torch (no torchvision) and reproduces transformers' PIL image
processors: ``embed`` uses the checkpoint's own transform; ``embed_views`` uses the view geometry of
:mod:`prism.models.views` at the model's input size H x W: ``"full"`` squashes the whole frame to
H x W, ``"center"`` resizes so the image covers the input 256/224 times over and centre-crops,
``"zoom"`` the same at 298/224.  Note that for CLIP checkpoints ``"center"`` is therefore a tighter
crop than ``embed`` (CLIP's own transform resizes the shorter side to the input size exactly).

Text handling per model type: CLIP pads on the right with an attention mask (its causal text
tower pools at the first end-of-text token, so padding never leaks in); Chinese-CLIP (a BERT text
tower) pools ``[CLS]`` under the attention mask; SigLIP was trained on sequences always padded to its
full context without a mask and pools the last position, so its texts are padded to
``max_position_embeddings`` and run without a mask, as the original.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast, get_args

import numpy as np
import numpy.typing as npt
import structlog
from PIL import Image

from prism.media.images import to_rgb
from prism.models.tokens import check_texts, embed_by_length
from prism.models.views import VIEWS, View

if TYPE_CHECKING:  # torch/transformers are imported lazily: importing this module stays cheap
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "ClipImageEmbedder",
    "ClipModelType",
    "ClipTextEmbedder",
    "ImagePreprocessing",
    "load_clip_embedders",
]

log = structlog.get_logger(__name__)

TextKind = Literal["query", "passage"]
ClipModelType = Literal["clip", "chinese_clip", "siglip"]
SUPPORTED_MODEL_TYPES: Final[tuple[str, ...]] = get_args(ClipModelType)

# "center"/"zoom": the image is resized to cover the input this many times over, then centre-cropped
# (EfficientNet's 256 -> 224 and 298 -> 224, at any input size).
_VIEW_COVER: Final[dict[str, float]] = {"center": 256 / 224, "zoom": 298 / 224}

OPENAI_CLIP_MEAN: Final = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: Final = (0.26862954, 0.26130258, 0.27577711)
_HALF: Final = (0.5, 0.5, 0.5)  # SigLIP's (IMAGENET_STANDARD_MEAN / STD in transformers)

_WEIGHT_FILES: Final = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Any one group complete is enough for AutoTokenizer.  A partial group is the dangerous case: an
# incomplete BPE file set can build a tokenizer with a near-empty vocabulary without any error.
_TOKENIZER_FILES: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "clip": (("tokenizer.json",), ("vocab.json", "merges.txt")),
    "chinese_clip": (("tokenizer.json",), ("vocab.txt",)),
    "siglip": (("tokenizer.json",), ("spiece.model",)),
}
_MIN_VOCAB: Final = 16


# --------------------------------------------------------------------------------------------
# image preprocessing


@dataclass(frozen=True, slots=True)
class ImagePreprocessing:
    """The checkpoint's image transform, as transformers' PIL image processors apply it.

    Resize (``shortest_edge``: shorter side to that length, the longer one truncated as transformers
    does; or ``resize_to``: exactly (height, width); neither: no resize), then an optional centre
    crop to ``crop`` (height, width), then ``(x * rescale_factor - mean) / std`` per channel.
    """

    shortest_edge: int | None
    resize_to: tuple[int, int] | None
    crop: tuple[int, int] | None
    resample: Image.Resampling
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of every image handed to the model."""
        size = self.crop or self.resize_to
        assert size is not None  # guaranteed by _image_preprocessing
        return size

    def render(self, image: Image.Image, view: View | None = None) -> npt.NDArray[np.uint8]:
        """One image -> (H, W, 3) uint8: the checkpoint's transform (``view`` None) or a view."""
        image = to_rgb(image)  # alpha composited on white, 16-bit scaled, as elsewhere in prism
        if view is None:
            return self._native(image)
        height, width = self.input_size
        w, h = image.size
        if view == "full":
            box = (0.0, 0.0, float(w), float(h))
        else:
            scale = _VIEW_COVER[view] * max(height / h, width / w)
            bw, bh = width / scale, height / scale  # the crop, in source pixels (inside the image)
            box = ((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2)
        return np.asarray(image.resize((width, height), self.resample, box=box), dtype=np.uint8)

    def _native(self, image: Image.Image) -> npt.NDArray[np.uint8]:
        w, h = image.size
        if self.shortest_edge is not None:
            # transformers' get_resize_output_image_size(default_to_square=False)
            s = self.shortest_edge
            rw, rh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        elif self.resize_to is not None:
            rh, rw = self.resize_to
        else:
            rw, rh = w, h
        if self.crop is None:
            out = image if (rw, rh) == (w, h) else image.resize((rw, rh), self.resample)
            return np.asarray(out, dtype=np.uint8)
        ch, cw = self.crop
        # Resize the whole image, then crop: bit-identical to transformers (resampling only the crop's
        # source box, as the views do, is off by one level on some pixels from float box rounding).
        resized = image if (rw, rh) == (w, h) else image.resize((rw, rh), self.resample)
        top, left = (rh - ch) // 2, (rw - cw) // 2  # transformers' center_crop offsets
        if top >= 0 and left >= 0:
            return np.asarray(resized.crop((left, top, left + cw, top + ch)), dtype=np.uint8)
        # Crop larger than the resized image: transformers pads with zeros, then crops.
        pw, ph = max(cw, rw), max(ch, rh)
        canvas = Image.new("RGB", (pw, ph), (0, 0, 0))
        canvas.paste(resized, (math.ceil((pw - rw) / 2), math.ceil((ph - rh) / 2)))
        top, left = (ph - ch) // 2, (pw - cw) // 2
        return np.asarray(canvas.crop((left, top, left + cw, top + ch)), dtype=np.uint8)


def _hw(value: object, *, what: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, dict) and isinstance(value.get("height"), int) and isinstance(value.get("width"), int):
        return int(value["height"]), int(value["width"])
    raise ValueError(f"unsupported image processor {what}: {value!r} (need an int or height/width)")


def _triple(value: object, *, what: str) -> tuple[float, float, float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), float(value), float(value)
    if isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int | float) for v in value):
        return float(value[0]), float(value[1]), float(value[2])
    raise ValueError(f"image processor {what} must be a number or 3 numbers, got {value!r}")


def _image_processor_dict(folder: Path) -> dict[str, Any] | None:
    path = folder / "preprocessor_config.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a JSON object")
        return data
    path = folder / "processor_config.json"  # transformers 5 saves a whole processor here
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        nested = data.get("image_processor") if isinstance(data, dict) else None
        if isinstance(nested, dict):
            return nested
    return None


def _image_preprocessing(folder: Path, model_type: ClipModelType, config: dict[str, Any]) -> ImagePreprocessing:
    vision = config.get("vision_config") or {}
    image_size = vision.get("image_size", 224)
    if not isinstance(image_size, int):
        raise ValueError(f"vision_config.image_size must be an int, got {image_size!r}")
    # transformers' defaults per model type (CLIPImageProcessor, ChineseCLIPImageProcessor,
    # SiglipImageProcessor), at the checkpoint's own image size.
    mean_default: object = config.get("image_mean", vision.get("image_mean", OPENAI_CLIP_MEAN))
    std_default: object = config.get("image_std", vision.get("image_std", OPENAI_CLIP_STD))
    defaults: dict[str, Any] = {
        "size": {"shortest_edge": image_size},
        "crop_size": {"height": image_size, "width": image_size},
        "do_resize": True,
        "do_center_crop": True,
        "resample": int(Image.Resampling.BICUBIC),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": mean_default,
        "image_std": std_default,
    }
    if model_type == "siglip":
        defaults |= {
            "size": {"height": image_size, "width": image_size},
            "do_center_crop": False,
            "image_mean": config.get("image_mean", vision.get("image_mean", _HALF)),
            "image_std": config.get("image_std", vision.get("image_std", _HALF)),
        }
    found = _image_processor_dict(folder)
    p = defaults | {k: v for k, v in (found or {}).items() if v is not None}  # null: the default

    shortest: int | None = None
    resize_to: tuple[int, int] | None = None
    if p["do_resize"]:
        size = p["size"]
        if isinstance(size, dict) and "shortest_edge" in size:
            if size.get("longest_edge") is not None:
                raise ValueError(f"unsupported image processor size {size!r} (longest_edge)")
            shortest = int(size["shortest_edge"])
        elif isinstance(size, int) and model_type != "siglip":
            shortest = size  # legacy int size: the shorter side (CLIP's default_to_square=False)
        else:
            resize_to = _hw(size, what="size")
    crop = _hw(p["crop_size"], what="crop_size") if p["do_center_crop"] else None
    if crop is None and resize_to is None:
        raise ValueError(f"image preprocessing in {folder} does not give a fixed input size: {found!r}")
    try:
        resample = Image.Resampling(int(p["resample"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"unsupported resample {p['resample']!r} in {folder}") from exc
    pre = ImagePreprocessing(
        shortest_edge=shortest,
        resize_to=resize_to,
        crop=crop,
        resample=resample,
        rescale_factor=float(p["rescale_factor"]) if p["do_rescale"] else 1.0,
        mean=_triple(p["image_mean"], what="image_mean") if p["do_normalize"] else (0.0, 0.0, 0.0),
        std=_triple(p["image_std"], what="image_std") if p["do_normalize"] else (1.0, 1.0, 1.0),
    )
    if pre.input_size != (image_size, image_size):
        raise ValueError(
            f"image preprocessing in {folder} gives {pre.input_size[0]}x{pre.input_size[1]} inputs but the "
            f"vision tower takes {image_size}x{image_size}"
        )
    return pre


# --------------------------------------------------------------------------------------------
# embedders


class _DualEncoder(Protocol):
    """What the embedders use of CLIPModel / ChineseCLIPModel / SiglipModel."""

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> object: ...

    def get_image_features(self, pixel_values: torch.Tensor) -> object: ...


def _pooled(output: object) -> torch.Tensor:
    """The projected vector of ``get_text_features`` / ``get_image_features`` (transformers 5)."""
    import torch

    pooled = getattr(output, "pooler_output", None)
    if not isinstance(pooled, torch.Tensor):
        raise TypeError(f"expected an output with a pooler_output tensor, got {type(output).__name__}")
    return pooled


class ClipTextEmbedder:
    """The text tower; ``embed`` returns float32 ``(n, dim)`` rows of unit L2 norm.

    Calls are serialised (the Rust tokenizer raises "Already borrowed" when used concurrently with
    truncation enabled).
    """

    model_id: str
    model_type: ClipModelType
    dim: int
    max_tokens: int
    batch_size: int
    device: str

    def __init__(
        self,
        *,
        model_id: str,
        model_type: ClipModelType,
        model: _DualEncoder,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        dim: int,
        max_tokens: int,
        pad_to: int | None,
        pad_id: int,
        batch_size: int,
    ) -> None:
        self.model_id = model_id
        self.model_type = model_type
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self.device = str(device)
        self.dim = dim
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._pad_to = pad_to  # SigLIP: always this width, no attention mask
        self._pad_id = pad_id
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ClipTextEmbedder(model_id={self.model_id!r}, dim={self.dim}, device={self.device!r})"

    def embed(self, texts: Sequence[str], kind: TextKind) -> npt.NDArray[np.float32]:
        """Embed ``texts`` (row i belongs to ``texts[i]``); ``kind`` must be "query" or "passage".

        Texts longer than ``max_tokens`` tokens (special tokens included) are truncated.
        """
        check_texts(texts, kind)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        with self._lock:
            encoded: list[list[int]] = self._tokenizer(
                list(texts),
                add_special_tokens=True,
                truncation=True,
                max_length=self.max_tokens,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
            return embed_by_length(encoded, self.dim, self.batch_size, self._forward)

    def _forward(self, batch: list[Sequence[int]]) -> npt.NDArray[np.float32]:
        import torch

        width = self._pad_to or max(len(ids) for ids in batch)
        ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        with torch.inference_mode():
            input_ids = torch.from_numpy(ids).to(self._device)
            attention = None if self._pad_to else torch.from_numpy(mask).to(self._device)
            feats = _pooled(self._model.get_text_features(input_ids=input_ids, attention_mask=attention))
            unit = torch.nn.functional.normalize(feats.to(torch.float32), p=2.0, dim=1, eps=1e-12)
            result: npt.NDArray[np.float32] = unit.cpu().numpy().astype(np.float32, copy=False)
        return result


class ClipImageEmbedder:
    """The vision tower; ``embed`` -> float32 ``(n, dim)``, ``embed_views`` -> ``(n, V, dim)``, unit rows.

    Thread-safe: inference holds no mutable state besides the (read-only) model.
    """

    model_id: str
    model_type: ClipModelType
    dim: int
    batch_size: int
    device: torch.device
    preprocessing: ImagePreprocessing

    def __init__(
        self,
        *,
        model_id: str,
        model_type: ClipModelType,
        model: _DualEncoder,
        preprocessing: ImagePreprocessing,
        device: torch.device,
        dim: int,
        batch_size: int,
    ) -> None:
        import torch

        self.model_id = model_id
        self.model_type = model_type
        self._model = model
        self.preprocessing = preprocessing
        self.device = device
        self.dim = dim
        self.batch_size = batch_size
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        pre = preprocessing
        # (x * rescale - mean) / std  ==  x * a - b, in fp32 on the device
        std = torch.tensor(pre.std, dtype=torch.float32)
        self._a = (pre.rescale_factor / std).reshape(1, 3, 1, 1).to(device)
        self._b = (torch.tensor(pre.mean, dtype=torch.float32) / std).reshape(1, 3, 1, 1).to(device)

    def __repr__(self) -> str:
        return f"ClipImageEmbedder(model_id={self.model_id!r}, dim={self.dim}, device={str(self.device)!r})"

    # -- public API ---------------------------------------------------------------------------

    def preprocess_uint8(self, images: Sequence[Image.Image], view: View | None = None) -> torch.Tensor:
        """(n, 3, H, W) uint8 on the CPU: the checkpoint's transform (``view`` None) or a view."""
        import torch

        height, width = self.preprocessing.input_size
        if len(images) == 0:
            return torch.empty((0, 3, height, width), dtype=torch.uint8)
        batch = np.stack([self.preprocessing.render(im, view) for im in images])  # (n, H, W, 3)
        return torch.from_numpy(batch).permute(0, 3, 1, 2)

    def pixel_values(self, images: Sequence[Image.Image], view: View | None = None) -> torch.Tensor:
        """(n, 3, H, W) float32 normalised model input on the CPU (what ``model(pixel_values=...)`` takes)."""
        x = self.preprocess_uint8(images, view).to(self.device)
        return self._normalise(x).float().cpu()

    def embed(self, images: Sequence[Image.Image]) -> npt.NDArray[np.float32]:
        """float32 (n, dim) L2-normalised image vectors (the checkpoint's own preprocessing)."""
        n = len(images)
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            chunk = images[start : start + self.batch_size]
            out[start : start + len(chunk)] = self._features(self.preprocess_uint8(chunk))
        return out

    def embed_views(self, images: Sequence[Image.Image], views: Sequence[View] = VIEWS) -> npt.NDArray[np.float32]:
        """float32 (n, len(views), dim): L2-normalised vectors of several views of each image,
        all views of a batch going through the model together."""
        import torch

        bad = [v for v in views if v not in VIEWS]
        if bad:
            raise ValueError(f"unknown view(s) {bad!r}; valid: {', '.join(VIEWS)}")
        n, v = len(images), len(views)
        out = np.empty((n, v, self.dim), dtype=np.float32)
        if n == 0 or v == 0:
            return out
        per_batch = max(1, self.batch_size // v)
        for start in range(0, n, per_batch):
            chunk = images[start : start + per_batch]
            # rows ordered image-major: (img0 view0, img0 view1, ..., img1 view0, ...)
            x = torch.stack([self.preprocess_uint8(chunk, view) for view in views], dim=1).flatten(0, 1)
            out[start : start + len(chunk)] = self._features(x).reshape(len(chunk), v, self.dim)
        return out

    # -- internals ----------------------------------------------------------------------------

    def _normalise(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return (x_uint8.float() * self._a - self._b).to(self.dtype)

    def _features(self, x_uint8: torch.Tensor) -> npt.NDArray[np.float32]:
        """(b, 3, H, W) uint8 -> float32 (b, dim) unit rows."""
        import torch

        with torch.inference_mode():
            x = self._normalise(x_uint8.to(self.device, non_blocking=True))
            feats = _pooled(self._model.get_image_features(pixel_values=x))
            unit = torch.nn.functional.normalize(feats.to(torch.float32), p=2.0, dim=1, eps=1e-12)
            result: npt.NDArray[np.float32] = unit.cpu().numpy().astype(np.float32, copy=False)
        return result


# --------------------------------------------------------------------------------------------
# loading


def _read_config(folder: Path) -> tuple[bytes, dict[str, Any], ClipModelType]:
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json: not a transformers checkpoint folder")
    raw = path.read_bytes()
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a JSON object")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"unsupported model_type {model_type!r} in {path}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return raw, config, cast(ClipModelType, model_type)


def _check_files(folder: Path, model_type: ClipModelType) -> None:
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise FileNotFoundError(f"{folder} has no weights (expected one of: {', '.join(_WEIGHT_FILES)})")
    groups = _TOKENIZER_FILES[model_type]
    if not any(all((folder / name).is_file() for name in group) for group in groups):
        wanted = " or ".join(" + ".join(group) for group in groups)
        raise FileNotFoundError(f"{folder} has no tokenizer files for {model_type} (expected {wanted})")


def _load_model(folder: Path, model_type: ClipModelType, dtype: torch.dtype) -> PreTrainedModel:
    from transformers import ChineseCLIPModel, CLIPModel, SiglipModel

    cls: type[PreTrainedModel] = {"clip": CLIPModel, "chinese_clip": ChineseCLIPModel, "siglip": SiglipModel}[
        model_type
    ]
    loaded: Any = cls.from_pretrained(folder, dtype=dtype, output_loading_info=True)
    model, info = loaded
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    if missing or mismatched:
        raise ValueError(
            f"checkpoint {folder} does not fit {cls.__name__}: missing {missing[:5]} ({len(missing)}), "
            f"shape mismatch {mismatched[:5]} ({len(mismatched)})"
        )
    return cast("PreTrainedModel", model)


def _resolve_device(device: str | None) -> torch.device:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_clip_embedders(
    folder: Path,
    *,
    device: str | None = None,
    batch_size: int = 32,
    max_tokens: int = 77,
) -> tuple[ClipTextEmbedder, ClipImageEmbedder]:
    """Load a CLIP / Chinese-CLIP / SigLIP checkpoint folder once; return (text, image) embedders.

    ``device`` None picks CUDA when available (weights in fp16 there) and the CPU otherwise (fp32).
    ``max_tokens`` is capped at the text tower's ``max_position_embeddings`` (77 for CLIP, 64 for
    SigLIP); the embedders' ``max_tokens`` is the effective value.  ``model_id`` is the folder name
    plus the first 8 hex digits of the SHA-256 of config.json.

    Raises FileNotFoundError for a missing folder, config.json, weights or tokenizer files, and
    ValueError for an unsupported ``model_type``, weights that do not fit the architecture, or a
    tokenizer / image preprocessing that does not match the model.
    """
    folder = Path(folder)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2 (room for the special tokens), got {max_tokens}")
    raw, config, model_type = _read_config(folder)
    _check_files(folder, model_type)
    preprocessing = _image_preprocessing(folder, model_type, config)

    import torch
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    model_id = f"{folder.resolve().name}-{hashlib.sha256(raw).hexdigest()[:8]}"
    dev = _resolve_device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = _load_model(folder, model_type, dtype)

    text_cfg = model.config.text_config
    vocab = int(text_cfg.vocab_size)
    if not _MIN_VOCAB <= len(tokenizer) <= vocab:
        raise ValueError(
            f"tokenizer in {folder} has {len(tokenizer)} tokens but the text tower has {vocab} embeddings"
            " (broken or mismatched tokenizer files?)"
        )
    limit = int(text_cfg.max_position_embeddings)
    effective_tokens = min(max_tokens, limit)
    eos = text_cfg.eos_token_id
    if model_type == "clip" and eos != 2 and tokenizer.eos_token_id != eos:
        # CLIP pools at the first config.eos_token_id of each row (2 = legacy: at the highest id).
        raise ValueError(f"tokenizer eos id {tokenizer.eos_token_id} differs from the text config's eos_token_id {eos}")
    pad_id = tokenizer.pad_token_id
    if not isinstance(pad_id, int):
        pad_id = tokenizer.eos_token_id
    if not isinstance(pad_id, int):
        raise ValueError(f"tokenizer in {folder} has neither a pad nor an eos token")

    if model_type == "siglip":
        dim = int(text_cfg.projection_size)
        vision_dim = int(model.config.vision_config.hidden_size)
        if vision_dim != dim:
            raise ValueError(f"SigLIP towers disagree: text {dim}-d, vision {vision_dim}-d")
    else:
        dim = int(model.config.projection_dim)

    # transformers leaves eval() untyped and types its to() override through functools.wraps
    model.eval()  # type: ignore[no-untyped-call]
    model.to(dev)  # type: ignore[arg-type]
    encoder = cast(_DualEncoder, model)
    text = ClipTextEmbedder(
        model_id=model_id,
        model_type=model_type,
        model=encoder,
        tokenizer=tokenizer,
        device=dev,
        dim=dim,
        max_tokens=effective_tokens,
        pad_to=limit if model_type == "siglip" else None,
        pad_id=pad_id,
        batch_size=batch_size,
    )
    image = ClipImageEmbedder(
        model_id=model_id,
        model_type=model_type,
        model=encoder,
        preprocessing=preprocessing,
        device=dev,
        dim=dim,
        batch_size=batch_size,
    )
    log.info(
        "clip_model.loaded",
        model=model_id,
        model_type=model_type,
        device=str(dev),
        dtype=str(dtype),
        dim=dim,
        image_size=preprocessing.input_size,
        max_tokens=effective_tokens,
        seconds=round(time.perf_counter() - t0, 2),
    )
    return text, image
