"""Running workers: a separate process (``prism serve ingest``) or a thread inside the embedded suite."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
from celery.concurrency.thread import TaskPool as ThreadTaskPool

from .app import IngestApp

log = structlog.get_logger(__name__)


class AppThreadPool(ThreadTaskPool):  # type: ignore[misc]
    """Celery's thread pool whose threads run tasks with the worker's own app as current app.

    A worker started without the ``celery worker`` command (which makes its app the process
    default) runs each task through ``celery.app.trace.trace_task_ret``, which looks the task up
    by name in ``current_app``; in a fresh pool thread that is Celery's process-wide default app,
    not this worker's.  The default app only knew the task through Celery's process-wide list of
    shared tasks, i.e. some other ingest app's copy: a second ingest app in one process ran the
    first one's task (its store, clients and broker), and without that list the task is unknown
    and the message is dropped.  Per thread, so two embedded workers in a process never mix.
    """

    executor: ThreadPoolExecutor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executor.shutdown(wait=False)  # the base pool's executor: no thread started yet
        self.executor = ThreadPoolExecutor(
            max_workers=self.limit, thread_name_prefix="ingest-task", initializer=self.app.set_current
        )

    def on_apply(self, *args: Any, **kwargs: Any) -> Any:
        result = super().on_apply(*args, **kwargs)
        # An error outside the task body (an unknown task name, a message that does not decode)
        # ends in this future, which Celery never reads: the message would vanish without a word.
        result.f.add_done_callback(_log_pool_error)
        return result


def _log_pool_error(future: Future[Any]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.error("ingest.task_not_run", error=repr(exc))


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
            pool_cls=AppThreadPool,
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
