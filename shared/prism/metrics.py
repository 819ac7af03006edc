"""Prometheus metrics shared by every service.

Metric objects live in the default registry, created once here, labelled by service, so in the
embedded mode (all services in one process) one ``/metrics`` endpoint shows every service.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

RPC_REQUESTS = Counter("prism_rpc_requests_total", "gRPC requests handled", ["service", "method", "code"])
RPC_ERRORS = Counter("prism_rpc_errors_total", "gRPC requests that failed", ["service", "method", "code"])
RPC_LATENCY = Histogram(
    "prism_rpc_latency_seconds", "gRPC handler latency", ["service", "method"], buckets=LATENCY_BUCKETS
)
BATCH_SIZE = Histogram("prism_batch_size", "Items per model batch", ["service"], buckets=BATCH_BUCKETS)
# Its rate is the model's utilisation: near 1, the model is the bottleneck; well below, its feeding is.
MODEL_BUSY = Counter("prism_model_busy_seconds", "Seconds the model spent running batches", ["service"])
ITEMS = Counter("prism_items_total", "Items encoded, by outcome", ["service", "outcome"])
HTTP_REQUESTS = Counter("prism_http_requests_total", "HTTP requests", ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "prism_http_latency_seconds", "HTTP request latency", ["route", "method"], buckets=LATENCY_BUCKETS
)
INDEX_POINTS = Gauge("prism_index_points", "Points in the product collection", ["collection"])
INGESTED = Counter("prism_ingest_products_total", "Products through ingestion, by outcome", ["outcome"])
SERVICE_READY = Gauge("prism_service_ready", "1 when the service reports SERVING", ["service"])

_started_ports: set[int] = set()
_lock = threading.Lock()


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose the default registry on ``http://host:port/metrics`` once per port (0 disables)."""
    if port <= 0:
        return
    with _lock:
        if port in _started_ports:
            return
        start_http_server(port, addr=host)
        _started_ports.add(port)


DEAD_LETTERED = Counter("prism_ingest_dead_lettered_total", "Messages parked on the dead-letter queue", ["code"])
EVENTS = Counter("prism_ingest_events_total", "Object events received, by what they led to", ["result"])
QUEUE_DEPTH = Gauge("prism_ingest_queue_depth", "Messages waiting in an ingest queue", ["queue"])
