"""What the fusion service loads once: the collection layout the encoders imply, and the index."""

from __future__ import annotations

from prism.encoding import EncoderClient
from prism.fusers import Fuser, load_fuser
from prism.fusion import FusionCore, VectorLayout
from prism.grpc_server import wait_until_serving
from prism.index import AnyIndex, open_index
from prism.pipeline import encoder_models
from prism.settings import CommonSettings
from prism.tagger import PhotoTagger, load_tagger

from .settings import Settings


def layout_of(text: EncoderClient, image: EncoderClient, videos: bool = True) -> tuple[VectorLayout, str]:
    """The vector layout and the model ids of the running encoders."""
    t, i = text.info(), image.info()
    layout = VectorLayout.for_encoders(t.dim, i.dim, bool(i.views), i.shared_dim, i.dim if videos else 0)
    return layout, encoder_models(text, image)


def load_trained_fuser(common: CommonSettings) -> Fuser | None:
    """The fusion ``prism train`` validated for the models folder in use (None: equal weights)."""
    if common.models_dir is None or common.clip_checkpoint is not None:
        return None
    from prism.training.heads import resolve_version

    return load_fuser(resolve_version(common.models_dir))


def load_trained_tagger(common: CommonSettings) -> PhotoTagger | None:
    """The photo tagger ``prism train`` fitted for the models folder in use (None: no predictions)."""
    if common.models_dir is None or common.clip_checkpoint is not None:
        return None
    from prism.training.heads import resolve_version

    return load_tagger(resolve_version(common.models_dir))


def load(settings: Settings, index: AnyIndex | None = None, common: CommonSettings | None = None) -> FusionCore:
    for address in (settings.text_encoder_address, settings.image_encoder_address):
        wait_until_serving(address, timeout=600)
    text = EncoderClient(settings.text_encoder_address, timeout_s=settings.encoder_timeout_s)
    image = EncoderClient(settings.image_encoder_address, timeout_s=settings.encoder_timeout_s)
    try:
        layout, model_id = layout_of(text, image, settings.index_videos)
    finally:
        text.close()
        image.close()
    common = common or CommonSettings()
    return FusionCore(
        index or open_index(settings.index_settings()),
        layout,
        model_id=model_id,
        lexical_stats=settings.lexical_stats,
        fuser=load_trained_fuser(common),
        tagger=load_trained_tagger(common),
    )
