"""``python -m services.ingest`` (= ``prism serve ingest``): one Celery worker process."""

from __future__ import annotations

import os

from prism.logs import setup_logging
from prism.metrics import serve_metrics
from prism.settings import CommonSettings

from .app import create_app
from .settings import Settings
from .worker import worker_argv


def main() -> None:
    common, settings = CommonSettings(), Settings()
    setup_logging(common.log_level, common.log_format if common.log_format != "auto" else "json")
    serve_metrics(settings.metrics_port, settings.host)
    app = create_app(settings)
    app.declare_topology()
    # Celery handles SIGTERM as a warm shutdown: in-flight tasks finish and are acked, the rest stay queued.
    app.worker_main(worker_argv(app, hostname=f"ingest-{os.getpid()}@%h", loglevel=common.log_level))


if __name__ == "__main__":
    main()
