"""Embedded mode: every service in one supervised process, on loopback ports.

The services are the same gRPC servers and HTTP app as in the distributed mode, talking over real
loopback gRPC; only the settings differ (free ports, Qdrant embedded on a folder or in memory).
Used by ``prism demo``, ``prism ingest``/``eval`` without remote services, the end-to-end tests
and the benchmarks.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from prism.catalog import Catalog, StripMode
from prism.settings import CommonSettings

if TYPE_CHECKING:
    from prism.fusion import FusionCore
    from prism.grpc_server import GrpcService
    from prism.pipeline import IngestReport
    from services.gateway.server import Gateway
    from services.ingest.app import IngestApp
    from services.ingest.submit import RunReport
    from services.ingest.worker import EmbeddedWorker

log = structlog.get_logger(__name__)


@dataclass
class EmbeddedSuite:
    common: CommonSettings
    encoders: dict[str, GrpcService]
    servicers: dict[str, Any]
    gateway: Gateway
    fusion: GrpcService
    fusion_core: FusionCore
    http_port: int
    http_host: str = "127.0.0.1"
    ingest_app: IngestApp | None = None
    ingest_worker: EmbeddedWorker | None = None
    store_root: Path | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    def ingest(
        self,
        catalog: Catalog,
        *,
        strip: StripMode = "none",
        prune: bool = False,
        limit: int | None = None,
        only: Collection[str] | None = None,
        show_progress: bool = True,
    ) -> IngestReport:
        from prism.pipeline import Ingestor

        core = self.gateway.core
        ingestor = Ingestor(self.fusion_core, core.text, core.image, video=core.video)
        report = ingestor.ingest(catalog, strip=strip, prune=prune, limit=limit, only=only, show_progress=show_progress)
        self.refresh_lexical()
        return report

    def start_ingest(self, store_root: Path, concurrency: int = 8) -> IngestApp:
        """The event-driven path in-process: a folder store, Celery on the in-memory transport and a
        real worker thread running the same tasks as a RabbitMQ worker, against these services."""
        if self.ingest_app is not None:
            return self.ingest_app
        from prism.encoding import EncoderClient
        from prism.fusion import FusionClient
        from prism.storage import FolderStore
        from services.ingest.app import create_app
        from services.ingest.settings import Settings as IngestSettings
        from services.ingest.submit import EventPublisher
        from services.ingest.tasks import Resources, use_resources
        from services.ingest.worker import EmbeddedWorker

        # Names of this suite's own: kombu's in-memory transport keeps one set of queues for the
        # whole process, so two suites' workers would otherwise take each other's tasks.
        tag = uuid.uuid4().hex[:8]
        settings = IngestSettings(
            broker_url="memory://localhost/",
            text_encoder_address=self.encoders["text-encoder"].address,
            image_encoder_address=self.encoders["image-encoder"].address,
            video_encoder_address=self.encoders["video-encoder"].address,
            fusion_address=self.fusion.address,
            concurrency=concurrency,
        ).with_broker_prefix(f"prism.{tag}")
        app = create_app(settings)
        use_resources(
            app,
            Resources(
                text=EncoderClient(settings.text_encoder_address, timeout_s=settings.encoder_timeout_s),
                image=EncoderClient(settings.image_encoder_address, timeout_s=settings.encoder_timeout_s),
                fusion=FusionClient(settings.fusion_address, timeout_s=settings.encoder_timeout_s),
                store=FolderStore(store_root),
                video=EncoderClient(settings.video_encoder_address, timeout_s=settings.encoder_timeout_s),
            ),
        )
        app.declare_topology()
        # The gateway's S3 webhook feeds the same in-process events queue.
        publisher = EventPublisher(app)
        self.gateway.app.state.event_sink = lambda event: publisher.publish([event])
        worker = EmbeddedWorker(app, concurrency=concurrency)
        worker.start()
        self.ingest_app, self.ingest_worker, self.store_root = app, worker, store_root
        return app

    def submit(
        self,
        catalog: Catalog,
        *,
        store_root: Path,
        prune: bool = False,
        limit: int | None = None,
        show_progress: bool = True,
    ) -> RunReport:
        """``prism ingest`` in embedded mode: upload to the folder store, publish the S3 events,
        follow the worker's outcomes until the index caught up."""
        from prism.storage import FolderStore
        from services.ingest.submit import submit_catalog

        app = self.start_ingest(store_root)
        report = submit_catalog(
            app, FolderStore(store_root), catalog, prune=prune, limit=limit, show_progress=show_progress
        )
        self.fusion_core.flush()
        self.refresh_lexical()
        return report

    def refresh_lexical(self) -> None:
        """Let the gateway's lexical search use the statistics the fusion service keeps current."""
        if self.gateway.core.lexical is not self.fusion_core.lexical:
            self.gateway.core.set_lexical(self.fusion_core.lexical)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.ingest_worker is not None:
            self.ingest_worker.stop()
        self.gateway.stop()
        self.fusion.stop(grace=2.0)
        self.fusion_core.flush()
        for name, service in self.encoders.items():
            service.stop(grace=2.0)
            self.servicers[name].close()
        self.gateway.core.index.close()
        log.info("embedded.stopped")

    def __enter__(self) -> EmbeddedSuite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_suite(
    *,
    common: CommonSettings | None = None,
    index_path: Path | None = None,
    http_port: int = 8080,
    grpc_port: int = 0,
    fusion_port: int = 0,
    collection: str = "products",
) -> EmbeddedSuite:
    """Start text and image encoders, then the gateway (gRPC + HTTP) against an embedded index.

    ``index_path=None`` keeps the index in memory (fresh each time, as ``prism eval`` needs).
    Port 0 picks free ports.
    """
    from services.fusion import model as fusion_model
    from services.fusion.server import FusionServicer, fusion_grpc_service
    from services.fusion.settings import Settings as FusionSettings
    from services.gateway.server import build_gateway
    from services.gateway.settings import Settings as GatewaySettings
    from services.image_encoder.server import build_service as build_image
    from services.image_encoder.settings import Settings as ImageSettings
    from services.text_encoder.server import build_service as build_text
    from services.text_encoder.settings import Settings as TextSettings
    from services.video_encoder.server import build_service as build_video
    from services.video_encoder.settings import Settings as VideoSettings

    common = common or CommonSettings()
    text_service, text_servicer = build_text(TextSettings(port=0, metrics_port=0), common)
    image_service, image_servicer = build_image(ImageSettings(port=0, metrics_port=0), common)
    video_service, video_servicer = build_video(VideoSettings(port=0, metrics_port=0), common)
    encoders = {"text-encoder": text_service, "image-encoder": image_service, "video-encoder": video_service}
    servicers: dict[str, Any] = {
        "text-encoder": text_servicer,
        "image-encoder": image_servicer,
        "video-encoder": video_servicer,
    }
    for service in encoders.values():
        service.start()
    # Load both models at once: each is mostly waiting on disk and single-threaded Python setup.
    errors: list[BaseException] = []

    def warm(s: GrpcService) -> None:
        try:
            s.warm()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=warm, args=(s,), name=f"warm-{n}") for n, s in encoders.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for service in encoders.values():
            service.stop(grace=0)
        raise errors[0]
    gw_settings = GatewaySettings(
        port=grpc_port,
        http_port=http_port,
        text_encoder_address=text_service.address,
        image_encoder_address=image_service.address,
        video_encoder_address=video_service.address,
        qdrant_url=None,
        index_path=index_path,
        collection=collection,
        lexical_stats=index_path / "lexical.json" if index_path is not None else None,
        lexical_reload_s=0,
    )
    gateway = build_gateway(gw_settings, common=common)
    # The fusion service writes the same embedded index the gateway reads (one process owns it).
    fusion_settings = FusionSettings(
        port=fusion_port,
        text_encoder_address=text_service.address,
        image_encoder_address=image_service.address,
        qdrant_url=None,
        index_path=index_path,
        collection=collection,
        lexical_stats=gw_settings.lexical_stats,
    )
    fusion_servicer = FusionServicer(
        lambda: fusion_model.load(fusion_settings, gateway.core.index, common), fusion_settings.max_products_per_call
    )
    fusion = fusion_grpc_service(fusion_servicer, fusion_settings)
    gateway.grpc.start()
    try:
        fusion.start()
        fusion.warm()
        port = gateway.start_http(gw_settings.http_host, http_port)
    except BaseException:
        gateway.grpc.stop(grace=0)
        fusion.stop(grace=0)
        for service in encoders.values():
            service.stop(grace=0)
        raise
    gateway.grpc.warm()
    suite = EmbeddedSuite(
        common=common,
        encoders=encoders,
        servicers=servicers,
        gateway=gateway,
        fusion=fusion,
        fusion_core=fusion_servicer.core,
        http_port=port,
    )
    if suite.fusion_core.lexical.n_docs:
        suite.refresh_lexical()
    log.info(
        "embedded.ready",
        url=suite.url,
        grpc=gateway.grpc.address,
        fusion=fusion.address,
        encoders={n: s.address for n, s in encoders.items()},
    )
    return suite
