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
    """The image encoder's own network (EfficientNet, or a CLIP checkpoint's image tower), so clip
    vectors live in the same space as the indexed photos."""
    from prism.models.temporal import load_pool
    from services.image_encoder import model as image_model
    from services.image_encoder.settings import Settings as ImageSettings

    heads = image_model.load_heads(common)
    image = image_model.load(
        ImageSettings(max_batch=settings.max_batch * settings.sample_frames, threads=settings.threads), common
    )
    return VideoModels(image=image, pool=load_pool(heads.folder if heads is not None else None, image.dim), heads=heads)
