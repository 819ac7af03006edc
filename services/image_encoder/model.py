"""Loads the image model once per process."""

from __future__ import annotations

from prism.models.protocols import ImageModel
from prism.settings import CommonSettings

from .settings import Settings


def load(settings: Settings, common: CommonSettings) -> ImageModel:
    if common.clip_checkpoint is not None:
        from prism.models.clip_shared import clip_towers

        return clip_towers(common.clip_checkpoint, common.device)[1]
    from prism.models.efficientnet import load_image_embedder

    return load_image_embedder(device=common.device, batch_size=settings.max_batch, threads=settings.threads)
