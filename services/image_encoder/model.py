"""Loads the image model once per process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prism.models.protocols import ImageModel
from prism.settings import CommonSettings

if TYPE_CHECKING:
    from prism.training.heads import Heads

from .settings import Settings


def load(settings: Settings, common: CommonSettings) -> ImageModel:
    if common.clip_checkpoint is not None:
        from prism.models.clip_shared import clip_towers

        return clip_towers(common.clip_checkpoint, common.device)[1]
    from prism.models.efficientnet import load_image_embedder

    return load_image_embedder(
        device=common.device,
        batch_size=settings.forward_batch,
        threads=settings.threads,
        precision=settings.precision,
        preprocess_threads=settings.preprocess_threads,
        calibration=calibration(settings, common),
        cache_dir=common.cache_dir,
    )


def calibration(settings: Settings, common: CommonSettings) -> list[Path]:
    """The photos that calibrate the int8 graph (none for other precisions)."""
    if settings.precision != "int8":
        return []
    from prism.models.efficientnet_int8 import calibration_photos

    if settings.calibration_dir is not None:
        return calibration_photos(settings.calibration_dir, settings.calibration_photos)
    return calibration_photos(common.data_dir / "catalogs", settings.calibration_photos, pattern="*/images/*")


def load_heads(common: CommonSettings) -> Heads | None:
    """The trained image head of ``PRISM_MODELS_DIR`` (None without one, or when a CLIP checkpoint
    already supplies a shared space).  A models folder that is set but unreadable fails the start:
    serving native vectors where the index expects shared ones would mix spaces silently."""
    if common.models_dir is None or common.clip_checkpoint is not None:
        return None
    from prism.training.heads import load_heads as load

    return load(common.models_dir)
