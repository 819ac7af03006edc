"""Server-side micro-batching.

Concurrent gRPC calls each carry a few items; running the model once per call wastes most of
its throughput.  A :class:`MicroBatcher` queues items from every caller and hands them to the model
together: a batch is closed when it reaches ``max_batch`` items or ``max_wait_s`` after its first
item arrived, whichever comes first.  One worker thread owns the model, so the model never runs
concurrently with itself (torch already uses all cores inside one call).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from prism import metrics

T = TypeVar("T")
R = TypeVar("R")

log = structlog.get_logger(__name__)


@dataclass
class _Request(Generic[T, R]):
    items: Sequence[T]
    future: Future[list[R]]


class MicroBatcher(Generic[T, R]):
    """Batches items from concurrent callers into calls of ``fn(items) -> results`` (same order)."""

    def __init__(
        self,
        fn: Callable[[list[T]], list[R]],
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._fn = fn
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._name = name
        self._queue: queue.Queue[_Request[T, R] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # How busy the model is (benchmarks read these: is the encoder or its feeding the bottleneck?)
        self.busy_s = 0.0
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"batch-{self._name}", daemon=True)
                self._thread.start()

    def close(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join(timeout=30)
                self._thread = None

    def submit(self, items: Sequence[T], timeout: float | None = None) -> list[R]:
        """Run ``items`` through the model (batched with other callers) and wait for the results."""
        if not items:
            return []
        self.start()
        fut: Future[list[R]] = Future()
        self._queue.put(_Request(items, fut))
        return fut.result(timeout=timeout)

    def _run(self) -> None:
        pending: _Request[T, R] | None = None
        while True:
            first = pending or self._queue.get()
            pending = None
            if first is None:
                return
            batch = [first]
            size = len(first.items)
            deadline = time.monotonic() + self._max_wait_s
            while size < self._max_batch:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                if size + len(nxt.items) > self._max_batch and size > 0:
                    pending = nxt  # keep it for the next batch rather than exceed max_batch
                    break
                batch.append(nxt)
                size += len(nxt.items)
            self._execute(batch)

    def _execute(self, batch: list[_Request[T, R]]) -> None:
        items: list[T] = [item for req in batch for item in req.items]
        metrics.BATCH_SIZE.labels(self._name).observe(len(items))
        t0 = time.perf_counter()
        try:
            results = self._fn(items)
            busy = time.perf_counter() - t0
            self.busy_s += busy
            metrics.MODEL_BUSY.labels(self._name).inc(busy)
            self.batches += 1
            self.items += len(items)
            if len(results) != len(items):
                raise RuntimeError(f"{self._name}: model returned {len(results)} results for {len(items)} items")
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller, not swallowed
            log.exception("batch.failed", batcher=self._name, items=len(items))
            for req in batch:
                req.future.set_exception(exc)
            return
        offset = 0
        for req in batch:
            n = len(req.items)
            req.future.set_result(results[offset : offset + n])
            offset += n
