"""Each service as its own process (as in docker-compose/helm), and the shared gRPC wrapper's contract."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from prism.gen.common.v1 import types_pb2
from prism.gen.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from tests.media_samples import jpeg

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_text_encoder_process_health_reflection_metrics_batching_and_sigterm(cache_dir: Any) -> None:
    port, mport = free_port(), free_port()
    env = {
        **os.environ,
        "PRISM_TEXT_ENCODER_PORT": str(port),
        "PRISM_TEXT_ENCODER_METRICS_PORT": str(mport),
        "PRISM_CACHE_DIR": str(cache_dir),
        "PRISM_TEXT_ENCODER_CACHE_VECTORS": "false",
        "PRISM_LOG_FORMAT": "json",
        "PRISM_LOG_LEVEL": "DEBUG",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "prism.cli", "serve", "text-encoder"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)
        seen: list[int] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                status = health.Check(
                    health_pb2.HealthCheckRequest(service="prism.encoder.v1.EncoderService"), timeout=1
                ).status
            except grpc.RpcError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.02)
                continue
            seen.append(status)
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            time.sleep(0.02)
        assert seen and seen[0] == health_pb2.HealthCheckResponse.NOT_SERVING, (
            "health must say NOT_SERVING while loading"
        )
        assert seen[-1] == health_pb2.HealthCheckResponse.SERVING

        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in resp.list_services_response.service}
        assert {"prism.encoder.v1.EncoderService", "grpc.health.v1.Health"} <= names

        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        out = stub.Embed(
            encoder_pb2.EmbedRequest(texts=["blue dress"], text_kind=encoder_pb2.TEXT_KIND_QUERY),
            metadata=[("x-request-id", "req-test-123")],
        )
        assert out.dim == 384 and len(out.embeddings[0].vector.values) == 384

        # 24 concurrent single-text calls must share model batches (server-side micro-batching)
        def call(i: int) -> None:
            stub.Embed(encoder_pb2.EmbedRequest(texts=[f"product number {i} in red"]))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = httpx.get(f"http://127.0.0.1:{mport}/metrics").text
        assert 'prism_rpc_requests_total{code="OK",method="Embed",service="text-encoder"} 25.0' in metrics
        batches = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith('prism_batch_size_count{service="text-encoder"}')
        )
        assert batches < 25 - 1, f"{batches} model batches for 25 calls: nothing was batched"
        busy = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith('prism_model_busy_seconds_total{service="text-encoder"}')
        )
        assert busy > 0, "the model's busy time must be exported (its rate is the model's utilisation)"

        with pytest.raises(grpc.RpcError) as e:
            stub.Embed(encoder_pb2.EmbedRequest())
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty_batch" in (e.value.details() or "")
        with pytest.raises(grpc.RpcError) as e:
            stub.Embed(encoder_pb2.EmbedRequest(media=[types_pb2.Media(data=jpeg())]))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "wrong_modality" in (e.value.details() or "")
        mixed = stub.Embed(encoder_pb2.EmbedRequest(texts=["ok", "   ", "also ok"]))
        assert [bool(x.error.code) for x in mixed.embeddings] == [False, True, False]
        assert mixed.embeddings[1].error.code == "empty_text"
        channel.close()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        logs = proc.stdout.read() if proc.stdout else ""
        assert '"request_id": "req-test-123"' in logs, "request id from metadata must reach the logs"
        assert "grpc.stopped" in logs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
