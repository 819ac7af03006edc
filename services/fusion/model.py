"""What the fusion service loads once: the collection layout the encoders imply, and the index."""

from __future__ import annotations

from prism.encoding import EncoderClient
from prism.fusion import FusionCore, VectorLayout
from prism.grpc_server import wait_until_serving
from prism.index import AnyIndex, open_index

from .settings import Settings


def layout_of(text: EncoderClient, image: EncoderClient) -> tuple[VectorLayout, str]:
    """The vector layout and the model ids of the running encoders."""
    t, i = text.info(), image.info()
    return VectorLayout.for_encoders(t.dim, i.dim, bool(i.views)), f"{t.model_id}|{i.model_id}"


def load(settings: Settings, index: AnyIndex | None = None) -> FusionCore:
    for address in (settings.text_encoder_address, settings.image_encoder_address):
        wait_until_serving(address, timeout=600)
    text = EncoderClient(settings.text_encoder_address, timeout_s=settings.encoder_timeout_s)
    image = EncoderClient(settings.image_encoder_address, timeout_s=settings.encoder_timeout_s)
    try:
        layout, model_id = layout_of(text, image)
    finally:
        text.close()
        image.close()
    return FusionCore(
        index or open_index(settings.index_settings()),
        layout,
        model_id=model_id,
        lexical_stats=settings.lexical_stats,
    )
