"""Loads what the video encoder needs once per process: the image network, the temporal pool and
(with trained models) the image head that maps pooled clips into the shared space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prism.models.protocols import ImageModel
from prism.settings import CommonSettings

from .settings import Settings

if TYPE_CHECKING:
    from prism.models.temporal import TemporalPool
    from prism.training.heads import Heads


@dataclass
class VideoModels:
    image: ImageModel
    pool: TemporalPool
    heads: Heads | None


def load(settings: Settings, common: CommonSettings) -> VideoModels:
    from prism.models.efficientnet import load_image_embedder
    from prism.models.temporal import load_pool
    from services.image_encoder.model import load_heads

    heads = load_heads(common)
    image = load_image_embedder(
        device=common.device, batch_size=settings.max_batch * settings.sample_frames, threads=settings.threads
    )
    return VideoModels(image=image, pool=load_pool(heads.folder if heads is not None else None), heads=heads)
