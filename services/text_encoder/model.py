"""Loads the text model once per process."""

from __future__ import annotations

from prism.models.protocols import TextModel
from prism.settings import CommonSettings

from .settings import Settings


def load(settings: Settings, common: CommonSettings) -> TextModel:
    if common.clip_checkpoint is not None:
        from prism.models.clip_shared import clip_towers

        return clip_towers(common.clip_checkpoint, common.device)[0]
    from prism.models.text import load_text_embedder

    return load_text_embedder(
        settings.model,
        common.cache_dir,
        device=common.device,
        max_tokens=settings.max_tokens,
        batch_size=settings.max_batch,
        precision=settings.precision,
    )
