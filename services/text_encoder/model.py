"""Loads the text model once per process."""

from __future__ import annotations

from prism.models.text import TextEmbedder, load_text_embedder
from prism.settings import CommonSettings

from .settings import Settings


def load(settings: Settings, common: CommonSettings) -> TextEmbedder:
    return load_text_embedder(
        settings.model,
        common.cache_dir,
        device=common.device,
        max_tokens=settings.max_tokens,
        batch_size=settings.max_batch,
    )
