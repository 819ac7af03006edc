"""Several ingest apps in one process (a test session, ``prism ingest`` then ``prism eval``): each
app's task runs against that app's own settings, store and broker, and no warning is raised."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from prism.encoding import EncoderClient
from prism.events import RUN_METADATA, build_event
from prism.fusion import FusionClient
from prism.storage import FolderStore
from services.ingest.app import SYNC_TASK, IngestApp, create_app
from services.ingest.settings import Settings
from services.ingest.submit import EventPublisher, run_queue
from services.ingest.tasks import Resources, resources, use_resources
from services.ingest.worker import AppThreadPool, EmbeddedWorker

pytestmark = pytest.mark.unit

# Nothing listens here: the cases below never reach an encoder or the fusion service.
NOWHERE = "127.0.0.1:9"


def _app(tag: str, store_root: Path) -> tuple[IngestApp, list[Callable[[], None]]]:
    # Queue names of its own: the in-memory transport's queues are shared by the whole process.
    app = create_app(
        Settings(
            broker_url="memory://localhost/",  # with a host: kombu warns about a bare memory://
        ).with_broker_prefix(tag)
    )
    text, image, fusion = EncoderClient(NOWHERE), EncoderClient(NOWHERE), FusionClient(NOWHERE)
    use_resources(app, Resources(text=text, image=image, fusion=fusion, store=FolderStore(store_root), video=None))
    return app, [text.close, image.close, fusion.close]


@pytest.fixture
def two_apps(tmp_path: Path) -> Iterator[tuple[IngestApp, IngestApp]]:
    first, close_first = _app("first", tmp_path / "first")
    second, close_second = _app("second", tmp_path / "second")
    yield first, second
    for close in (*close_first, *close_second):
        close()


def _dead_letters(app: IngestApp) -> list[dict[str, object]]:
    out = []
    with app.connection_for_write() as conn:
        ch = conn.default_channel
        while (msg := ch.basic_get(app.settings.dead_letter_queue, no_ack=True)) is not None:
            out.append(json.loads(msg.body))
    return out


def _apply(app: IngestApp, **kwargs: Any) -> dict[str, str]:
    """Run the app's task here, eagerly. Not ``.get()``: once any worker has run in this process,
    Celery refuses that as "result.get() within a task" (a process-wide flag its pool step sets)."""
    res = app.tasks[SYNC_TASK].apply(kwargs=kwargs)
    assert res.successful(), res.traceback
    out: dict[str, str] = res.result
    return out


def test_each_app_runs_its_own_task_against_its_own_store_and_broker(two_apps: tuple[IngestApp, IngestApp]) -> None:
    first, second = two_apps
    # Finalizing is where Celery used to hand the later app the earlier app's task (and warn).
    first.finalize()
    second.finalize()
    assert first.tasks[SYNC_TASK] is not second.tasks[SYNC_TASK]
    assert first.tasks[SYNC_TASK].app is first and second.tasks[SYNC_TASK].app is second
    # Only the second app's store holds a (broken) record of product p1.
    second_store = resources(second).store
    second_store.put("products/p1.json", b"not json", "application/json")
    # From the media queue, a product without a record is skipped: no encoder or fusion call.
    got_first = _apply(first, product_id="p1", source="media", media=True)
    assert got_first["outcome"] == "skipped", got_first
    got_second = _apply(second, product_id="p1", source="media", media=True)
    assert got_second["outcome"] == "failed" and got_second["code"] == "invalid_record", got_second
    # The failure is parked on the second app's dead-letter queue, not the first's.
    assert [d["product_id"] for d in _dead_letters(second)] == ["p1"]
    assert _dead_letters(first) == []


def test_an_embedded_worker_runs_its_own_apps_task(two_apps: tuple[IngestApp, IngestApp]) -> None:
    """The worker thread's pool looks tasks up in its own app, not in Celery's process default."""
    first, second = two_apps
    first.finalize()  # an earlier app in the process, as the first of two test modules leaves behind
    second.declare_topology()
    worker = EmbeddedWorker(second, concurrency=2)
    worker.start()
    try:
        got = _run_one(second, "media/p2/front.jpg")
    finally:
        worker.stop()
    # no record in the second app's store: skipped (looked up in Celery's default app, the task never ran)
    assert [(o["run"], o["product_id"], o["outcome"]) for o in got] == [("r2", "p2", "skipped")], got


def _run_one(app: IngestApp, key: str) -> list[dict[str, Any]]:
    """Publish one S3 event of run ``r2`` and wait for its outcome, as ``prism ingest`` does."""
    queue: Any = run_queue(app, "r2")  # kombu is untyped
    got: list[dict[str, Any]] = []
    with app.connection_for_write() as conn:
        ch = conn.default_channel
        queue.bind(ch).declare()
        EventPublisher(app).publish([build_event("created", "local", key, metadata={RUN_METADATA: "r2"})])
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            if (msg := ch.basic_get(queue.name, no_ack=True)) is None:
                time.sleep(0.02)
            else:
                got.append(json.loads(msg.body))
    return got


def test_an_error_outside_a_task_body_is_logged_not_lost(two_apps: tuple[IngestApp, IngestApp]) -> None:
    first, _ = two_apps
    pool = AppThreadPool(1, app=first)

    def broken() -> None:
        raise KeyError("prism.ingest.nope")

    with capture_logs() as logs:
        pool.apply_async(broken)
        deadline = time.monotonic() + 10
        while not logs and time.monotonic() < deadline:
            time.sleep(0.01)
    pool.stop()
    assert [(e["event"], e["log_level"]) for e in logs] == [("ingest.task_not_run", "error")], logs
    assert "prism.ingest.nope" in logs[0]["error"]
