"""Pooling a clip's frames over time into one set of view vectors (attention pooling).

A clip of a product is a handful of sampled frames, each encoded by the image network (several
views per frame).  Some frames are better than others: a blurred pan, a frame that shows the
background, a zoomed-in crop.  :class:`TemporalPool` scores each frame from its features and takes
the softmax-weighted mean per view; its last layer starts at zero, so an untrained pool is the
plain mean.  ``prism train`` fits it on clips synthesized from product photos
(:mod:`prism.training.clips`) and writes ``video_pool.safetensors`` next to the image head.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

POOL_WEIGHTS_FILE: Final = "video_pool.safetensors"
POOL_CONFIG_FILE: Final = "video_pool.json"
POOL_FORMAT: Final = 1


@dataclass(frozen=True)
class PoolConfig:
    dim: int = 1280
    hidden: int = 128
    format: int = POOL_FORMAT

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PoolConfig:
        if int(d.get("format", 0)) != POOL_FORMAT:
            raise ValueError(f"unsupported video pool format {d.get('format')!r} (this code reads {POOL_FORMAT})")
        return cls(dim=int(d["dim"]), hidden=int(d["hidden"]))


class TemporalPool(nn.Module):
    """``(B, F, V, D)`` frame-view features + ``(B, F)`` mask -> ``(B, V, D)`` unit vectors and
    the ``(B, F)`` frame weights."""

    def __init__(self, config: PoolConfig) -> None:
        super().__init__()
        self.config = config
        self.score = nn.Sequential(nn.Linear(config.dim, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 1))
        last = self.score[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        summary = F.normalize(frames.mean(dim=2), dim=-1)
        logits = self.score(summary).squeeze(-1).masked_fill(~mask, -1e4)
        weights = torch.softmax(logits, dim=-1) * mask.to(frames.dtype)
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1e-12)
        pooled = F.normalize(torch.einsum("bf,bfvd->bvd", weights, frames), dim=-1)
        return pooled, weights


def pool_clips(pool: TemporalPool, clips: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    """Clips of ``(F_i, V, D)`` frame features (any F_i >= 1) -> ``(len(clips), V, D)``."""
    if not clips:
        raise ValueError("no clips to pool")
    longest = max(len(c) for c in clips)
    _, views, dim = clips[0].shape
    frames = np.zeros((len(clips), longest, views, dim), dtype=np.float32)
    mask = np.zeros((len(clips), longest), dtype=bool)
    for i, c in enumerate(clips):
        frames[i, : len(c)] = c
        mask[i, : len(c)] = True
    pool.eval()
    with torch.inference_mode():
        pooled, _ = pool(torch.from_numpy(frames), torch.from_numpy(mask))
    out: npt.NDArray[np.float32] = pooled.numpy().astype(np.float32, copy=False)
    return out


def save_pool(folder: Path, pool: TemporalPool) -> dict[str, str]:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in pool.state_dict().items()}
    save_file(tensors, str(folder / POOL_WEIGHTS_FILE), metadata={"format": str(POOL_FORMAT)})
    os.chmod(folder / POOL_WEIGHTS_FILE, 0o644)  # safetensors creates it 0600
    (folder / POOL_CONFIG_FILE).write_text(json.dumps(asdict(pool.config), indent=2, sort_keys=True) + "\n")
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in (POOL_WEIGHTS_FILE, POOL_CONFIG_FILE)}


def load_pool(folder: Path | None, dim: int = 1280) -> TemporalPool:
    """The trained pool of a model version, or the untrained one (the plain mean) for ``dim``-d
    frame features without one."""
    if folder is None or not (folder / POOL_WEIGHTS_FILE).is_file():
        return TemporalPool(PoolConfig(dim=dim)).eval()
    from safetensors.torch import load_file

    config = PoolConfig.from_json(json.loads((folder / POOL_CONFIG_FILE).read_text()))
    if config.dim != dim:
        raise ValueError(
            f"{folder}: the video pool expects {config.dim}-d frame features, the image network gives {dim}"
        )
    pool = TemporalPool(config)
    pool.load_state_dict(load_file(str(folder / POOL_WEIGHTS_FILE)), strict=True)
    return pool.eval()


def pool_id(pool: TemporalPool) -> str:
    """Names the pool by its weights (cached clip vectors follow a retrained pool)."""
    h = hashlib.sha256()
    for k, v in sorted(pool.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return f"pool-{h.hexdigest()[:16]}"
