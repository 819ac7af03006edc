"""gRPC image encoder: decodes untrusted images safely, batches them, embeds with EfficientNet-Lite0."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from prism import tracing
from prism.encoding import Backend, EncoderLimits, EncoderServicer, RawItem, encoder_grpc_service
from prism.grpc_server import GrpcService
from prism.media.images import ImageLimits, decode_image
from prism.models.protocols import ImageModel
from prism.settings import CommonSettings
from prism.storage import FolderStore
from prism.vector_cache import VectorCache

from . import model
from .settings import Settings

if TYPE_CHECKING:
    from prism.training.heads import Heads

SERVICE_NAME = "image-encoder"


def _warm_png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 96), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def shared_projection(heads: Heads, views: tuple[str, ...]) -> Callable[[list[Image.Image], np.ndarray], np.ndarray]:
    """The trained image head as the encoder applies it: the decoded photos' colour statistics next
    to the views the network just computed -> unit vectors in the text encoder's space."""
    from prism.training.heads import colour_features, head_input, project_image

    encoder_views = views or ("center",)

    def project(images: list[Image.Image], native: np.ndarray) -> np.ndarray:
        colour = np.stack([colour_features(im) for im in images])
        return project_image(heads, head_input(native, colour, heads.config, encoder_views=encoder_views))

    return project


def make_backend(embedder: ImageModel, settings: Settings, heads: Heads | None = None) -> Backend[Image.Image]:
    limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)

    def prepare(item: RawItem) -> Image.Image:
        # Decoding runs in the calling gRPC thread, so concurrent requests decode in parallel
        # while the batcher thread keeps the model busy.
        with tracing.span("decode", bytes=len(item.data or b"")):
            return decode_image(item.data or b"", limits)

    views = tuple(settings.views)

    def run(images: list[Image.Image]) -> np.ndarray:
        return embedder.embed_views(images, views) if views else embedder.embed(images)

    return Backend(
        model_id=embedder.model_id,
        dim=embedder.dim,
        device=str(embedder.device),
        prepare=prepare,
        run=run,
        warmup_items=(RawItem(kind="media", data=_warm_png()),),
        views=len(views),
        shared=shared_projection(heads, views) if heads is not None else None,
        shared_dim=heads.config.out_dim if heads is not None else 0,
        shared_id=heads.content_id if heads is not None else "",
    )


def build_service(settings: Settings, common: CommonSettings) -> tuple[GrpcService, EncoderServicer[Image.Image]]:
    cache = VectorCache(common.cache_dir / "vectors.sqlite") if settings.cache_vectors else None
    store = FolderStore(Path(settings.store_dir)) if settings.store_dir else None
    servicer: EncoderServicer[Image.Image] = EncoderServicer(
        service=SERVICE_NAME,
        modality="image",
        load_backend=lambda: make_backend(model.load(settings, common), settings, model.load_heads(common)),
        max_batch=settings.max_batch,
        max_wait_s=settings.batch_wait_ms / 1000.0,
        cache=cache,
        store=store,
        limits=EncoderLimits(max_media_bytes=settings.max_image_bytes),
    )
    return encoder_grpc_service(servicer, settings), servicer
