"""The entry point every gRPC service shares (``prism serve <service>``, ``python -m services.<name>``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prism import tracing
from prism.grpc_server import GrpcService
from prism.logs import setup_logging
from prism.metrics import serve_metrics
from prism.settings import CommonSettings, ServiceSettings

S = TypeVar("S", bound=ServiceSettings)


def run_grpc_service(settings: S, build: Callable[[S, CommonSettings], tuple[GrpcService, Any]]) -> None:
    """JSON logs, metrics endpoint, then serve until SIGTERM (health NOT_SERVING until warm)."""
    common = CommonSettings()
    setup_logging(common.log_level, common.log_format if common.log_format != "auto" else "json")
    serve_metrics(settings.metrics_port, settings.host)
    service, servicer = build(settings, common)
    tracing.setup_tracing(service.name)  # exported only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    service.serve_forever()
    close = getattr(servicer, "close", None)
    if callable(close):  # release the model / flush state once in-flight calls have drained
        close()
