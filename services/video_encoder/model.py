"""Loads what the video encoder needs once per process: the image network, the temporal pool and
(with trained models) the image head that maps pooled clips into the shared space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prism.models.precision import Precision
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


def load(settings: Settings, common: CommonSettings, *, image_precision: Precision | None = None) -> VideoModels:
    """The image encoder's own network (EfficientNet, or a CLIP checkpoint's image tower), so clip
    vectors live in the same space as the indexed photos.  It runs in the image encoder's precision
    (PRISM_IMAGE_ENCODER_PRECISION) unless ``image_precision`` says otherwise (benchmarks)."""
    from prism.models.temporal import load_pool
    from services.image_encoder import model as image_model
    from services.image_encoder.settings import Settings as ImageSettings

    heads = image_model.load_heads(common)
    image_settings = ImageSettings(threads=settings.threads)
    if image_precision is not None:
        image_settings = image_settings.model_copy(update={"precision": image_precision})
    image = image_model.load(image_settings, common)
    return VideoModels(image=image, pool=load_pool(heads.folder if heads is not None else None, image.dim), heads=heads)
