"""Builds the gateway: search core, gRPC SearchService (shared wrapper) and the HTTP app."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI

from prism.encoding import EncoderClient
from prism.fusers import RetrievalWeights, load_retrieval
from prism.gen.search.v1 import search_pb2, search_pb2_grpc
from prism.grpc_server import GrpcService, Registration
from prism.index import AnyIndex, open_index
from prism.lexical import Bm25Encoder
from prism.settings import CommonSettings

from .core import SearchCore
from .grpc_api import SearchServicer
from .http import create_app
from .settings import Settings

if TYPE_CHECKING:
    from prism.models.reranker import Reranker

SERVICE_NAME = "gateway"


@dataclass
class Gateway:
    core: SearchCore
    grpc: GrpcService
    app: FastAPI
    http: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def start_http(self, host: str, port: int) -> int:
        """Serve HTTP in a background thread; returns the bound port (0 picks a free one)."""
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            limit_concurrency=512,
        )
        self.http = uvicorn.Server(config)
        # uvicorn installs no signal handlers outside the main thread: the supervisor owns signals.
        self._thread = threading.Thread(target=self.http.run, name="gateway-http", daemon=True)
        self._thread.start()
        while not self.http.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"gateway HTTP server failed to start on {host}:{port}")
            threading.Event().wait(0.02)
        sock = self.http.servers[0].sockets[0]
        return int(sock.getsockname()[1])

    def stop(self) -> None:
        if self.http is not None:
            self.http.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
        self.grpc.stop()
        self.core.query_media.close()
        self.core.text.close()
        self.core.image.close()
        if self.core.video is not None:
            self.core.video.close()


def load_retrieval_weights(common: CommonSettings) -> RetrievalWeights | None:
    """The hybrid weights ``prism train`` chose on validation for the models folder in use."""
    if common.models_dir is None or common.clip_checkpoint is not None:
        return None
    from prism.training.heads import resolve_version

    return load_retrieval(resolve_version(common.models_dir))


def load_reranker_model(common: CommonSettings) -> Reranker | None:
    """The cross-encoder ``prism train`` wrote into the models folder in use, if any."""
    if common.models_dir is None or common.clip_checkpoint is not None:
        return None
    from prism.models.reranker import load_reranker

    return load_reranker(common.models_dir, common.cache_dir)


def build_gateway(settings: Settings, index: AnyIndex | None = None, common: CommonSettings | None = None) -> Gateway:
    index = index or open_index(settings.index_settings())
    text = EncoderClient(settings.text_encoder_address, timeout_s=settings.encoder_timeout_s)
    image = EncoderClient(settings.image_encoder_address, timeout_s=settings.encoder_timeout_s)
    video = (
        EncoderClient(settings.video_encoder_address, timeout_s=settings.encoder_timeout_s)
        if settings.video_encoder_address
        else None
    )
    core = SearchCore(settings, index, text, image, video)
    core.retrieval = load_retrieval_weights(common or CommonSettings())
    if settings.media_from_store:
        from prism.storage import StoreSettings, open_store

        core.store = open_store(StoreSettings())
    if settings.lexical_stats is not None and settings.lexical_stats.is_file():
        core.set_lexical(Bm25Encoder.load(settings.lexical_stats))
    service = GrpcService.for_settings(
        SERVICE_NAME,
        [
            Registration(
                search_pb2_grpc.add_SearchServiceServicer_to_server,
                SearchServicer(core),
                search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name,
            )
        ],
        settings,
    )
    ready = threading.Event()
    models = common or CommonSettings()

    def warm() -> None:
        # the cross-encoder loads before the gateway reports SERVING (~10 s: the base text model)
        if settings.rerank != "off":
            core.reranker = load_reranker_model(models)
        ready.set()

    service.warmup = warm
    app = create_app(core, ready=ready.is_set)
    if settings.events_broker_url:
        app.state.event_sink = event_forwarder(settings)
    return Gateway(core=core, grpc=service, app=app)


def event_forwarder(settings: Settings) -> Callable[[dict[str, Any]], None]:
    """Publishes webhook events to the broker's events exchange, as MinIO's AMQP target would."""
    from services.ingest.app import create_app as create_ingest_app
    from services.ingest.settings import Settings as IngestSettings
    from services.ingest.submit import EventPublisher

    assert settings.events_broker_url is not None
    publisher = EventPublisher(
        create_ingest_app(
            IngestSettings(
                broker_url=settings.events_broker_url,
                events_exchange=settings.events_exchange,
                events_queue=settings.events_queue,
            )
        )
    )
    return lambda event: publisher.publish([event])
