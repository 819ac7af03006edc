"""Graceful degradation: an encoder down fails only the queries that need it; a Qdrant server that
does not answer gives a deadline error, not a hang."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from prism.devservers import free_port

pytestmark = pytest.mark.integration


def _gateway(suite: Any, index: Any = None, **overrides: Any) -> Any:
    from services.gateway.server import build_gateway
    from services.gateway.settings import Settings

    fields: dict[str, Any] = {
        "port": 0,
        "http_port": 0,
        "text_encoder_address": suite.encoders["text-encoder"].address,
        "image_encoder_address": suite.encoders["image-encoder"].address,
        "index_path": None,
        "encoder_timeout_s": 3.0,
        "lexical_reload_s": 0,
        **overrides,
    }
    return build_gateway(Settings(**fields), index=index)


def test_image_encoder_down_text_still_answers_photo_is_503(indexed_suite: Any, myntra_slice: Any) -> None:
    gateway = _gateway(
        indexed_suite, image_encoder_address=f"127.0.0.1:{free_port()}", index=indexed_suite.gateway.core.index
    )
    photo = next((myntra_slice / "images").iterdir()).read_bytes()
    try:
        with TestClient(gateway.app) as client:
            r = client.post("/v1/search", json={"text": "blue shirt", "k": 5})
            assert r.status_code == 200 and r.json()["hits"]
            t0 = time.monotonic()
            r = client.post("/v1/search", files={"image": ("q.jpg", photo)})
            assert r.status_code == 503 and "unavailable" in r.json()["error"]["message"], r.text
            assert time.monotonic() - t0 < 10
    finally:
        gateway.grpc.stop(grace=0)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never answers: a Qdrant server that hangs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield int(sock.getsockname()[1])
    stop.set()
    t.join(2)
    for c in held:
        c.close()
    sock.close()


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_a_hanging_qdrant_server_gives_504_not_a_hang(indexed_suite: Any, silent_server: int) -> None:
    gateway = _gateway(indexed_suite, qdrant_url=f"http://127.0.0.1:{silent_server}", qdrant_timeout_s=1)
    try:
        with TestClient(gateway.app) as client:
            t0 = time.monotonic()
            r = client.post("/v1/search", json={"text": "blue shirt", "k": 5})
            assert r.status_code == 504, r.text
            assert "did not answer" in r.json()["error"]["message"]
            assert time.monotonic() - t0 < 15
    finally:
        gateway.grpc.stop(grace=0)
