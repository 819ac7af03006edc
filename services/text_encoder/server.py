"""gRPC text encoder: validates texts, batches concurrent requests, embeds with the loaded model."""

from __future__ import annotations

import numpy as np

from prism.encoding import Backend, EncoderLimits, EncoderServicer, RawItem, encoder_grpc_service
from prism.errors import InvalidInput
from prism.grpc_server import GrpcService
from prism.models.protocols import TextModel
from prism.settings import CommonSettings
from prism.vector_cache import VectorCache

from . import model
from .settings import Settings

SERVICE_NAME = "text-encoder"
TextItem = tuple[str, str]  # (kind, text)


def make_backend(embedder: TextModel, settings: Settings) -> Backend[TextItem]:
    def prepare(item: RawItem) -> TextItem:
        text = (item.text or "").strip()
        if not text:
            raise InvalidInput("text is empty", code="empty_text")
        if len(text) > settings.max_text_chars:
            raise InvalidInput(
                f"text of {len(text)} characters exceeds {settings.max_text_chars}", code="text_too_long"
            )
        return item.kind, text

    def run(items: list[TextItem]) -> np.ndarray:
        out = np.zeros((len(items), embedder.dim), dtype=np.float32)
        for kind in ("query", "passage"):  # grouped: e5 prefixes differ
            idx = [i for i, (k, _) in enumerate(items) if k == kind]
            if idx:
                out[idx] = embedder.embed([items[i][1] for i in idx], kind=kind)
        return out

    return Backend(
        model_id=embedder.model_id,
        dim=embedder.dim,
        device=str(embedder.device),
        prepare=prepare,
        run=run,
        warmup_items=(RawItem(kind="query", text="warm up"), RawItem(kind="passage", text="预热 a product title")),
    )


def build_service(settings: Settings, common: CommonSettings) -> tuple[GrpcService, EncoderServicer[TextItem]]:
    """Build the gRPC service; the model loads in ``warm()``, after the port is up (NOT_SERVING)."""
    cache = VectorCache(common.cache_dir / "vectors.sqlite") if settings.cache_vectors else None
    servicer: EncoderServicer[TextItem] = EncoderServicer(
        service=SERVICE_NAME,
        modality="text",
        load_backend=lambda: make_backend(model.load(settings, common), settings),
        max_batch=settings.max_batch,
        max_wait_s=settings.batch_wait_ms / 1000.0,
        cache=cache,
        limits=EncoderLimits(max_text_chars=settings.max_text_chars),
    )
    return encoder_grpc_service(servicer, settings), servicer
