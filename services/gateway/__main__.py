"""``python -m services.gateway`` (= ``prism serve gateway``): HTTP + gRPC against remote encoders."""

from __future__ import annotations

from prism import tracing
from prism.grpc_server import install_stop_signals, wait_until_serving
from prism.logs import setup_logging
from prism.settings import CommonSettings

from .server import build_gateway
from .settings import Settings


def main() -> None:
    common, settings = CommonSettings(), Settings()
    setup_logging(common.log_level, common.log_format if common.log_format != "auto" else "json")
    tracing.setup_tracing("gateway")  # exported only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    gateway = build_gateway(settings)
    gateway.grpc.start()
    install_stop_signals(gateway.stop)
    port = gateway.start_http(settings.http_host, settings.http_port)
    for address in (settings.text_encoder_address, settings.image_encoder_address):
        wait_until_serving(address, timeout=600)
    gateway.grpc.warm()
    print(f"gateway: http://{settings.http_host}:{port}  grpc {gateway.grpc.address}", flush=True)
    gateway.grpc.wait()


if __name__ == "__main__":
    main()
