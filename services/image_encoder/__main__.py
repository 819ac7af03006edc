"""``python -m services.image_encoder`` (= ``prism serve image-encoder``)."""

from __future__ import annotations

from prism.logs import setup_logging
from prism.metrics import serve_metrics
from prism.settings import CommonSettings

from .server import build_service
from .settings import Settings


def main() -> None:
    common, settings = CommonSettings(), Settings()
    setup_logging(common.log_level, common.log_format if common.log_format != "auto" else "json")
    serve_metrics(settings.metrics_port, settings.host)
    service, _ = build_service(settings, common)
    service.serve_forever()


if __name__ == "__main__":
    main()
