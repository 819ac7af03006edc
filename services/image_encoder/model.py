"""Loads the image model once per process."""

from __future__ import annotations

from prism.models.efficientnet import ImageEmbedder, load_image_embedder
from prism.settings import CommonSettings

from .settings import Settings


def load(settings: Settings, common: CommonSettings) -> ImageEmbedder:
    return load_image_embedder(device=common.device, batch_size=settings.max_batch, threads=settings.threads)
