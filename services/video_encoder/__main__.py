"""``python -m services.video_encoder`` (= ``prism serve video-encoder``)."""

from __future__ import annotations

from prism.service_main import run_grpc_service

from .server import build_service
from .settings import Settings


def main() -> None:
    run_grpc_service(Settings(), build_service)


if __name__ == "__main__":
    main()
