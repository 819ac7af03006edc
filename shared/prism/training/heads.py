"""Projection heads trained by ``prism train``, and the code that serving runs with them.

The text encoder's space is the shared space (DESIGN.md).  An :class:`ImageHead` maps what the
frozen image encoder computes for a photo into that space:

* the EfficientNet-Lite0 pooled features of the views the head was trained on (``config.views``,
  averaged when several), and
* :func:`colour_features`: a small colour histogram of the photo's foreground, because ImageNet
  pooled features keep little of the colour a shopper names ("blue dress").

Everything here is what the image encoder service needs at serving time: :func:`load_heads`
reads a models folder written by ``prism train``; :func:`head_input` builds the head's input from
the encoder's view features and the decoded photos; :func:`project_image` is the pure function
from that input to unit vectors in the text space.  Weights are stored with safetensors beside a
JSON config.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from prism.media.images import to_rgb

__all__ = [
    "COLOUR_DIM",
    "HEAD_CONFIG_FILE",
    "HEAD_WEIGHTS_FILE",
    "HeadConfig",
    "Heads",
    "ImageHead",
    "colour_features",
    "head_input",
    "load_head",
    "load_heads",
    "project_image",
    "save_head",
]

HEAD_WEIGHTS_FILE: Final = "image_head.safetensors"
HEAD_CONFIG_FILE: Final = "image_head.json"
MANIFEST_FILE: Final = "manifest.json"
FORMAT_VERSION: Final = 1

# -------------------------------------------------------------------------------------------------
# colour statistics of a photo (computed from the decoded image, so any service can compute them)

_COLOUR_SIZE = 64  # the photo is reduced to this square before counting
_HUES = 12
_GREYS = 4
_BORDER = 3  # pixels of the reduced image used to estimate the background colour
_FG_THRESHOLD = 28.0  # max channel distance from the background colour that counts as foreground
# hue bins x (dark, bright) x (muted, vivid) + grey levels + mean/std RGB + foreground share
COLOUR_DIM: Final = _HUES * 2 * 2 + _GREYS + 6 + 1


def _centre_weight(size: int) -> npt.NDArray[np.float32]:
    ax = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    w: npt.NDArray[np.float32] = np.exp(-(xx**2 + yy**2) / (2 * 0.3**2)).astype(np.float32)
    return w


_CENTRE = _centre_weight(_COLOUR_SIZE)


def colour_features(image: Image.Image) -> npt.NDArray[np.float32]:
    """``(COLOUR_DIM,)`` float32 colour statistics of a product photo's foreground.

    The background is taken to be the median colour of the image border (product photos are shot
    on a plain, usually white, background); pixels far from it are the foreground, weighted
    towards the centre of the frame.  Returns the square roots of a hue x value x saturation
    histogram with four grey levels (Hellinger scaling), the foreground's mean and standard
    deviation per RGB channel (0..1), and the foreground share of the frame.
    """
    rgb = to_rgb(image).resize((_COLOUR_SIZE, _COLOUR_SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    px = np.asarray(rgb, dtype=np.float32)  # (S, S, 3) 0..255
    border = np.concatenate(
        [
            px[:_BORDER].reshape(-1, 3),
            px[-_BORDER:].reshape(-1, 3),
            px[:, :_BORDER].reshape(-1, 3),
            px[:, -_BORDER:].reshape(-1, 3),
        ]
    )
    background = np.median(border, axis=0)
    fg = (np.abs(px - background).max(axis=2) > _FG_THRESHOLD).astype(np.float32)
    share = float(fg.mean())
    if share < 0.02:  # nothing stands out from the border: use the whole frame
        fg = np.ones_like(fg)
    weight = (fg * _CENTRE).reshape(-1)
    weight = weight / max(float(weight.sum()), 1e-6)

    x = px.reshape(-1, 3) / 255.0
    mx = x.max(axis=1)
    mn = x.min(axis=1)
    chroma = mx - mn
    sat = np.where(mx > 1e-6, chroma / np.maximum(mx, 1e-6), 0.0)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    safe = np.maximum(chroma, 1e-6)
    hue = (
        np.where(
            mx == r,
            ((g - b) / safe) % 6.0,
            np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
        )
        / 6.0
    )  # 0..1
    grey = (sat < 0.2) | (mx < 0.18)
    hist = np.zeros(_HUES * 4 + _GREYS, dtype=np.float64)
    hue_bin = np.minimum((hue * _HUES).astype(np.int64), _HUES - 1)
    bright = (mx >= 0.55).astype(np.int64)
    vivid = (sat >= 0.5).astype(np.int64)
    colour_bin = hue_bin * 4 + bright * 2 + vivid
    grey_bin = _HUES * 4 + np.minimum((mx * _GREYS).astype(np.int64), _GREYS - 1)
    bins = np.where(grey, grey_bin, colour_bin)
    np.add.at(hist, bins, weight)

    mean = (x * weight[:, None]).sum(axis=0)
    std = np.sqrt(np.maximum(((x - mean) ** 2 * weight[:, None]).sum(axis=0), 0.0))
    out = np.concatenate([np.sqrt(hist), mean, std, [share]]).astype(np.float32)
    return out


# -------------------------------------------------------------------------------------------------
# the head


@dataclass(frozen=True)
class HeadConfig:
    """What a head expects and produces; stored as JSON beside its weights."""

    image_model: str  # the frozen encoder's model id, e.g. "efficientnet-lite0-imagenet"
    text_model: str  # the model whose space the head maps into, e.g. "multilingual-e5-small-q4"
    image_dim: int = 1280
    colour_dim: int = COLOUR_DIM
    out_dim: int = 384
    hidden: int = 1024
    dropout: float = 0.2
    # encoder views averaged into the head's input (names of prism.models.views.VIEWS)
    views: tuple[str, ...] = ("center",)
    format: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def in_dim(self) -> int:
        return self.image_dim + self.colour_dim

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["views"] = list(self.views)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HeadConfig:
        if int(d.get("format", 0)) != FORMAT_VERSION:
            raise ValueError(f"unsupported head format {d.get('format')!r} (this code reads {FORMAT_VERSION})")
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["views"] = tuple(known.get("views", ("center",)))
        return cls(**known)


class ImageHead(nn.Module):
    """Standardised input -> (MLP + linear shortcut) -> L2-normalised vector in the text space.

    ``input_mean``/``input_std`` are buffers set from the training set, so the head takes raw
    features (unit-norm encoder features next to histogram values on another scale).
    ``logit_scale`` is the learned inverse temperature of the contrastive loss (not used to project).
    """

    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        d = config.in_dim
        self.register_buffer("input_mean", torch.zeros(d))
        self.register_buffer("input_std", torch.ones(d))
        self.mlp = nn.Sequential(
            nn.Dropout(config.dropout / 2),
            nn.Linear(d, config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.out_dim),
        )
        self.shortcut = nn.Linear(d, config.out_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.05))))

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        with torch.no_grad():
            self.input_mean.copy_(mean)
            self.input_std.copy_(std.clamp(min=1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.input_mean) / self.input_std
        out: torch.Tensor = F.normalize(self.mlp(z) + self.shortcut(z), dim=-1)
        return out


def save_head(folder: Path, head: ImageHead) -> dict[str, str]:
    """Write ``image_head.safetensors`` + ``image_head.json`` into ``folder``; returns {file: sha256}."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, str(folder / HEAD_WEIGHTS_FILE), metadata={"format": str(FORMAT_VERSION)})
    os.chmod(folder / HEAD_WEIGHTS_FILE, 0o644)  # safetensors creates it 0600; services may run as another user
    (folder / HEAD_CONFIG_FILE).write_text(json.dumps(head.config.to_json(), indent=2, sort_keys=True) + "\n")
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in (HEAD_WEIGHTS_FILE, HEAD_CONFIG_FILE)
    }


def load_head(folder: Path) -> ImageHead:
    """Read a head written by :func:`save_head` (strict: every tensor must match the config)."""
    from safetensors.torch import load_file

    config = HeadConfig.from_json(json.loads((folder / HEAD_CONFIG_FILE).read_text()))
    head = ImageHead(config)
    head.load_state_dict(load_file(str(folder / HEAD_WEIGHTS_FILE)), strict=True)
    head.eval()
    return head


@dataclass(frozen=True)
class Heads:
    """The trained heads of one model version, as serving uses them."""

    version: str
    folder: Path
    image: ImageHead
    manifest: dict[str, Any]

    @property
    def config(self) -> HeadConfig:
        return self.image.config

    @property
    def content_id(self) -> str:
        """Names the head by its bytes (not its version's timestamp): vectors cached for one
        training run stay valid for an identical re-run, and only for that."""
        h = hashlib.sha256()
        for name in (HEAD_WEIGHTS_FILE, HEAD_CONFIG_FILE):
            h.update((self.folder / name).read_bytes())
        return f"head-{h.hexdigest()[:16]}"


def resolve_version(models_dir: Path) -> Path:
    """The folder of the version to serve: ``models_dir`` itself when it holds a head, else the
    version named ``current`` in ``models_dir/manifest.json``."""
    models_dir = Path(models_dir)
    if (models_dir / HEAD_WEIGHTS_FILE).is_file():
        return models_dir
    top = models_dir / MANIFEST_FILE
    if not top.is_file():
        raise FileNotFoundError(f"no {MANIFEST_FILE} or {HEAD_WEIGHTS_FILE} in {models_dir} (run `prism train`)")
    current = json.loads(top.read_text()).get("current")
    if not isinstance(current, str) or "/" in current or current.startswith("."):
        raise ValueError(f"{top}: 'current' must name a version folder, got {current!r}")
    folder = models_dir / "versions" / current
    if not (folder / HEAD_WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{top} names version {current!r} but {folder} has no {HEAD_WEIGHTS_FILE}")
    return folder


def load_heads(models_dir: Path) -> Heads:
    """Load the current version written by ``prism train`` into ``models_dir`` (or a version folder)."""
    folder = resolve_version(models_dir)
    manifest_path = folder / MANIFEST_FILE
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return Heads(
        version=str(manifest.get("version", folder.name)), folder=folder, image=load_head(folder), manifest=manifest
    )


def head_input(
    view_features: npt.NDArray[np.float32],
    colour: npt.NDArray[np.float32],
    config: HeadConfig,
    encoder_views: Sequence[str] = ("center",),
) -> npt.NDArray[np.float32]:
    """The head's input from the image encoder's outputs.

    ``view_features``: ``(n, 1280)`` (one view, ``encoder_views`` of length 1) or ``(n, V, 1280)``
    unit vectors of the views ``encoder_views`` (e.g. the service's ``("full", "center", "zoom")``);
    ``colour``: ``(n, COLOUR_DIM)`` from :func:`colour_features`.  The views the head was trained on
    are picked, averaged and re-normalised; the result is ``(n, config.in_dim)``.
    """
    feats = np.asarray(view_features, dtype=np.float32)
    if feats.ndim == 2:
        feats = feats[:, None, :]
    if feats.ndim != 3 or feats.shape[1] != len(encoder_views) or feats.shape[2] != config.image_dim:
        raise ValueError(f"view features of shape {feats.shape} do not match views {tuple(encoder_views)}")
    missing = [v for v in config.views if v not in encoder_views]
    if missing:
        raise ValueError(f"the head needs views {missing} that the encoder did not compute")
    idx = [list(encoder_views).index(v) for v in config.views]
    mean = feats[:, idx, :].mean(axis=1)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    col = np.asarray(colour, dtype=np.float32).reshape(len(mean), -1)
    if col.shape[1] != config.colour_dim:
        raise ValueError(f"colour features have {col.shape[1]} values, the head expects {config.colour_dim}")
    return np.concatenate([mean, col], axis=1).astype(np.float32, copy=False)


def project_image(head: ImageHead | Heads, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``(n, in_dim)`` head input (see :func:`head_input`) -> ``(n, out_dim)`` unit vectors in the
    text encoder's space.  Pure: eval mode, no gradient, no state changed."""
    module = head.image if isinstance(head, Heads) else head
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != module.config.in_dim:
        raise ValueError(f"expected features of shape (n, {module.config.in_dim}), got {x.shape}")
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(x)))
    finally:
        module.train(was_training)
    result: npt.NDArray[np.float32] = out.numpy().astype(np.float32, copy=False)
    return result
