"""``python -m services.ingest`` (= ``prism serve ingest``): one Celery worker process.

Beside the worker runs the shared gRPC wrapper with only the health service on ``port``: NOT_SERVING
until the worker consumes, NOT_SERVING again when it shuts down, so compose and Kubernetes probe
workers exactly as they probe the encoders.
"""

from __future__ import annotations

import os
from typing import Any

from celery import signals

from prism import tracing
from prism.grpc_server import GrpcService
from prism.logs import setup_logging
from prism.metrics import serve_metrics
from prism.settings import CommonSettings
from prism.storage import S3Store, StoreSettings, open_store

from .app import create_app
from .settings import Settings
from .worker import worker_argv


def main() -> None:
    common, settings = CommonSettings(), Settings()
    setup_logging(common.log_level, common.log_format if common.log_format != "auto" else "json")
    tracing.setup_tracing("ingest")  # exported only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    serve_metrics(settings.metrics_port, settings.host)
    health = GrpcService.for_settings("ingest", [], settings)
    health.start()

    def ready(**_: Any) -> None:
        health.warm()

    def stopping(**_: Any) -> None:
        health.stop(grace=0)

    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutting_down.connect(stopping, weak=False)
    store = open_store(StoreSettings())
    if isinstance(store, S3Store):
        store.ensure_bucket()  # and the bucket's event subscription, where the store supports one
    app = create_app(settings)
    app.declare_topology()
    # Celery handles SIGTERM as a warm shutdown: in-flight tasks finish and are acked, the rest stay queued.
    app.worker_main(worker_argv(app, hostname=f"ingest-{os.getpid()}@%h", loglevel=common.log_level))


if __name__ == "__main__":
    main()
