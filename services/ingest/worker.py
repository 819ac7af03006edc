"""Running workers: a separate process (``prism serve ingest``) or a thread inside the embedded suite."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import structlog

from .app import IngestApp

log = structlog.get_logger(__name__)


def worker_argv(app: IngestApp, *, hostname: str | None = None, loglevel: str = "INFO") -> list[str]:
    s = app.settings
    argv = [
        "worker",
        "--pool=threads",
        f"--concurrency={s.concurrency}",
        f"--queues={s.text_queue},{s.media_queue}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    return argv


@dataclass
class EmbeddedWorker:
    """A real Celery worker (consumer, thread pool, acks) in a thread of this process.

    Not eager mode: tasks travel through the broker (``memory://`` in embedded mode) exactly as
    they do through RabbitMQ.
    """

    app: IngestApp
    concurrency: int = 4
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _controller: Any = None

    def start(self, timeout: float = 30.0) -> None:
        s = self.app.settings
        # A task line per product would drown the command's progress; failures still log.
        logging.getLogger("celery").setLevel(logging.WARNING)
        self.app.finalize()
        self._controller = self.app.WorkController(
            app=self.app,
            pool_cls="threads",
            concurrency=self.concurrency,
            queues=[s.text_queue, s.media_queue],
            loglevel="WARNING",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=lambda _consumer: self._ready.set(),
        )
        self._thread = threading.Thread(target=self._controller.start, name="ingest-worker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("embedded ingest worker did not start")
        log.info("ingest.worker_started", broker=s.broker_url, concurrency=self.concurrency)

    def stop(self, timeout: float = 10.0) -> None:
        if self._controller is None:
            return
        from celery.worker import state

        # The same soft stop Celery's own embedded worker uses: finish in-flight tasks, then exit.
        state.should_terminate = 0
        if self._thread is not None:
            self._thread.join(timeout)
        state.should_terminate = None
        self._controller = None
