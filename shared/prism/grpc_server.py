"""The one gRPC server wrapper every Prism service runs in.

- standard health service (``grpc.health.v1``): NOT_SERVING until the model is loaded and warmed,
  NOT_SERVING again while draining on SIGTERM;
- server reflection, explicit message-size limits, keepalive settings;
- an interceptor that binds a request id (metadata ``x-request-id``) into structlog's context,
  records Prometheus metrics and maps :class:`prism.errors.PrismError` to gRPC status codes, so
  servicers simply raise ``InvalidInput`` / ``NotFound`` / ``Unavailable``;
- graceful stop: in-flight calls get ``grace_seconds`` to finish.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from prism import errors, metrics, tracing
from prism.logs import REQUEST_ID_HEADER, bind_request_id, clear_request_context
from prism.settings import ServiceSettings

log = structlog.get_logger(__name__)

_STATUS_BY_ERROR: list[tuple[type[errors.PrismError], grpc.StatusCode]] = [
    (errors.PayloadTooLarge, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]


def status_for(exc: errors.PrismError) -> grpc.StatusCode:
    for cls, code in _STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Client channel options: explicit size limits, keepalive so dead peers are noticed."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        # A restarted server is found again within seconds (gRPC's default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 3_000),
    ]


def server_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Server options: the same limits, and accept our clients' 30 s keepalive pings (the default
    policy answers pings more often than every 5 minutes with GOAWAY too_many_pings)."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


class _ObservingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, service: str) -> None:
        self._service = service

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler  # health watch streams and reflection: leave them alone
        method = details.method.rsplit("/", 1)[-1]
        if details.method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        inner = handler.unary_unary
        service = self._service

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            md = dict(context.invocation_metadata() or ())
            bind_request_id(md.get(REQUEST_ID_HEADER))
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                # The caller's trace continues here (W3C traceparent in the metadata).
                with tracing.extracted(md), tracing.span("rpc", service=service, method=method):
                    return inner(request, context)
            except errors.PrismError as exc:
                code = status_for(exc)
                log.info("rpc.rejected", method=method, code=code.name, error=exc.code, reason=exc.message)
                context.abort(code, f"{exc.code}: {exc.message}")
            except Exception:
                # context.abort raises a plain Exception subclass; keep the status it set.
                if context.code() is not None and context.code() != grpc.StatusCode.OK:
                    code = context.code()
                    raise
                code = grpc.StatusCode.INTERNAL
                log.exception("rpc.failed", method=method)
                context.abort(code, "internal error (see server logs)")
            finally:
                elapsed = time.perf_counter() - start
                metrics.RPC_REQUESTS.labels(service, method, code.name).inc()
                metrics.RPC_LATENCY.labels(service, method).observe(elapsed)
                if code != grpc.StatusCode.OK:
                    metrics.RPC_ERRORS.labels(service, method, code.name).inc()
                log.debug("rpc", service=service, method=method, code=code.name, ms=round(elapsed * 1000, 2))
                clear_request_context()

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class Registration:
    """A servicer and the generated ``add_XServicer_to_server`` function that mounts it."""

    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: Any
    full_name: str  # e.g. "prism.encoder.v1.EncoderService"


@dataclass
class GrpcService:
    """A running (or about to run) gRPC service with health, reflection, metrics and graceful stop."""

    name: str
    registrations: Sequence[Registration]
    host: str = "127.0.0.1"
    port: int = 0
    warmup: Callable[[], None] | None = None
    max_workers: int = 16
    max_message_bytes: int = 32 * 2**20
    grace_seconds: float = 10.0
    bound_port: int = field(init=False, default=0)
    _server: grpc.Server | None = field(init=False, default=None)
    _health: health.HealthServicer = field(init=False)
    _stopped: threading.Event = field(init=False, default_factory=threading.Event)

    @classmethod
    def for_settings(
        cls,
        name: str,
        registrations: Sequence[Registration],
        settings: ServiceSettings,
        warmup: Callable[[], None] | None = None,
    ) -> GrpcService:
        """A service bound, sized and drained as its settings say (every Prism service builds it so)."""
        return cls(
            name=name,
            registrations=registrations,
            host=settings.host,
            port=settings.port,
            warmup=warmup,
            max_workers=settings.max_workers,
            max_message_bytes=settings.max_message_bytes,
            grace_seconds=settings.grace_seconds,
        )

    def start(self) -> int:
        """Bind and start serving (health NOT_SERVING); returns the bound port."""
        self._health = health.HealthServicer(experimental_non_blocking=True)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix=f"grpc-{self.name}"),
            interceptors=[_ObservingInterceptor(self.name)],
            options=server_options(self.max_message_bytes),
        )
        for reg in self.registrations:
            reg.add_to_server(reg.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [r.full_name for r in self.registrations]
        reflection.enable_server_reflection(
            (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
        )
        self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.bound_port = server.add_insecure_port(f"{self.host}:{self.port}")
        if self.bound_port == 0:
            raise RuntimeError(f"{self.name}: cannot bind {self.host}:{self.port}")
        server.start()
        self._server = server
        log.info("grpc.started", service=self.name, address=self.address)
        return self.bound_port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.bound_port}"

    def warm(self) -> None:
        """Run the warm-up (load model, one dummy batch), then report SERVING."""
        start = time.perf_counter()
        if self.warmup is not None:
            self.warmup()
        self._set_status(health_pb2.HealthCheckResponse.SERVING)
        metrics.SERVICE_READY.labels(self.name).set(1)
        log.info("grpc.serving", service=self.name, warmup_s=round(time.perf_counter() - start, 3))

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish within the grace period, then stop."""
        if self._server is None or self._stopped.is_set():
            return
        self._health.enter_graceful_shutdown()
        metrics.SERVICE_READY.labels(self.name).set(0)
        log.info("grpc.stopping", service=self.name)
        self._server.stop(self.grace_seconds if grace is None else grace).wait()
        self._stopped.set()
        log.info("grpc.stopped", service=self.name)

    def wait(self) -> None:
        self._stopped.wait()

    def serve_forever(self) -> None:
        """Start, warm, and block until SIGTERM/SIGINT (used by ``prism serve <service>``)."""
        self.start()
        install_stop_signals(lambda: self.stop())
        self.warm()
        self.wait()

    def _set_status(self, status: int) -> None:
        self._health.set("", status)
        for reg in self.registrations:
            self._health.set(reg.full_name, status)


def install_stop_signals(on_stop: Callable[[], None]) -> None:
    """Run ``on_stop`` in a thread on SIGTERM/SIGINT (signal handlers must return quickly)."""

    def handler(signum: int, _frame: object) -> None:
        log.info("signal.received", signal=signal.Signals(signum).name)
        threading.Thread(target=on_stop, name="graceful-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def wait_until_serving(address: str, service: str = "", timeout: float = 120.0) -> None:
    """Block until the health service at ``address`` reports SERVING (or raise TimeoutError)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass  # not up yet: keep polling until the deadline
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not SERVING after {timeout}s")
            time.sleep(0.1)
