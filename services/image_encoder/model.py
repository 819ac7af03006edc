"""Loads the image model once per process."""

from __future__ import annotations

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

    return load_image_embedder(device=common.device, batch_size=settings.max_batch, threads=settings.threads)


def load_heads(common: CommonSettings) -> Heads | None:
    """The trained image head of ``PRISM_MODELS_DIR`` (None without one, or when a CLIP checkpoint
    already supplies a shared space).  A models folder that is set but unreadable fails the start:
    serving native vectors where the index expects shared ones would mix spaces silently."""
    if common.models_dir is None or common.clip_checkpoint is not None:
        return None
    from prism.training.heads import load_heads as load

    return load(common.models_dir)
