"""``prism ingest`` on the event-driven path: upload, announce, follow until the index caught up.

1. Each product's media go to ``media/<id>/<file>`` (skipped when the store already holds the
   same bytes) and its record, rewritten to point at those keys, to ``products/<id>.json``, with
   user metadata naming the run and, when new media bytes were written, saying so (its event then
   goes straight to the media queue).
2. One S3 event record per product record is published to the events exchange, exactly as MinIO's
   AMQP target would; the store's own media events (where a store sends them) are redundant with
   it and harmless (the task is idempotent).
3. Workers report one outcome per product to a queue of this run; the command shows progress
   until every product has a final outcome, then summarises (indexed, unchanged, deleted, failed
   with reasons).  The run queue outlives a dropped connection, so a broker hiccup loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import structlog
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Consumer

from prism.catalog import Catalog, Product, parse_product
from prism.errors import InvalidInput, NotFound
from prism.events import MEDIA_CHANGED, MEDIA_METADATA, RUN_METADATA, build_event
from prism.progress import Progress
from prism.storage import ObjectStore

from .app import IngestApp

log = structlog.get_logger(__name__)

FINAL = ("indexed", "unchanged", "deleted", "absent", "failed")


@dataclass
class RunReport:
    run: str
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # never uploaded: (id, code, reason)
    missing: list[str] = field(default_factory=list)  # no outcome before the timeout
    seconds: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o["outcome"] == outcome)

    @property
    def failed(self) -> list[tuple[str, str, str]]:
        failed = [(p, str(o["code"]), str(o["reason"])) for p, o in self.outcomes.items() if o["outcome"] == "failed"]
        return [*self.rejected, *failed]

    def summary(self) -> dict[str, Any]:
        by_code: dict[str, int] = {}
        for _, code, _ in self.failed:
            by_code[code] = by_code.get(code, 0) + 1
        return {
            "run": self.run,
            "indexed": self.count("indexed"),
            "unchanged": self.count("unchanged"),
            "deleted": self.count("deleted") + self.count("absent"),
            "failed": len(self.failed),
            "failed_by_reason": by_code,
            "missing": len(self.missing),
            "seconds": round(self.seconds, 1),
        }


class EventPublisher:
    """Publishes S3 event records (MinIO's format) to the events exchange."""

    def __init__(self, app: IngestApp) -> None:
        self.app = app
        self.queue = app.events_queue()

    def publish(self, events: list[dict[str, Any]]) -> None:
        with self.app.producer_or_acquire() as producer:
            for ev in events:
                producer.publish(
                    json.dumps(ev).encode(),
                    exchange=self.queue.exchange,
                    routing_key=self.queue.routing_key,
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=2,
                    declare=[self.queue],
                    retry=True,
                    retry_policy={"max_retries": 20, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 3},
                )


def _media_key(pid: str, rel: str, used: set[str]) -> str:
    name = PurePosixPath(rel).name or "media"
    key, i = f"media/{pid}/{name}", 1
    while key in used:  # two files with one name in different folders
        key, i = f"media/{pid}/{i}-{name}", i + 1
    used.add(key)
    return key


def _content_type(name: str) -> str:
    ext = PurePosixPath(name).suffix.lower()
    return {
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".png": "image/png",
        ".webp": "image/webp",
        ".gif": "image/gif",
        ".mp4": "video/mp4",
    }.get(ext, "application/octet-stream")


def upload_product(store: ObjectStore, catalog: Catalog, product: Product, run: str) -> dict[str, Any]:
    """Upload a product's media and its record; returns the S3 event record of the record."""
    used: set[str] = set()
    keys: dict[str, list[str]] = {"images": [], "videos": []}
    media_changed = False
    for kind, rels in (("images", product.images), ("videos", product.videos)):
        for rel in rels:
            key = _media_key(product.id, rel, used)
            keys[kind].append(key)
            try:
                data = catalog.media_path(rel).read_bytes()
            except (OSError, InvalidInput):
                continue  # the record still names it: the worker reports the product with the reason
            try:
                same = store.stat(key).etag == hashlib.md5(data).hexdigest()  # noqa: S324 - S3 etag
            except NotFound:
                same = False
            if not same:
                store.put(key, data, _content_type(key))
                media_changed = True
    record = {**product.to_record(), **keys}
    metadata = {RUN_METADATA: run, **({MEDIA_METADATA: MEDIA_CHANGED} if media_changed else {})}
    info = store.put(
        f"products/{product.id}.json",
        json.dumps(record, ensure_ascii=False, sort_keys=True).encode(),
        "application/json",
        metadata,
    )
    return build_event("created", store.bucket, info.key, info=info)


def run_queue(app: IngestApp, run: str) -> Queue:
    # Not exclusive and not auto-deleted: it must survive this command's connection dropping.
    return Queue(
        f"prism.run.{run}",
        app.outcomes_exchange(),
        routing_key=run,
        durable=False,
        auto_delete=False,
        queue_arguments={} if app.in_memory else {"x-expires": 3_600_000},
    )


def submit_catalog(
    app: IngestApp,
    store: ObjectStore,
    catalog: Catalog,
    *,
    prune: bool = False,
    limit: int | None = None,
    timeout_s: float = 3600.0,
    show_progress: bool = True,
    upload_threads: int = 8,
    on_published: Callable[[int], None] | None = None,
) -> RunReport:
    run = uuid.uuid4().hex[:16]
    report = RunReport(run)
    start = time.monotonic()
    app.declare_topology()
    queue = run_queue(app, run)
    with app.connection_for_write() as conn:
        queue.bind(conn.default_channel).declare()
    products: list[Product] = []
    for n, (lineno, rec, err) in enumerate(catalog.records()):
        if limit is not None and n >= limit:
            break
        try:
            if err is not None:
                raise InvalidInput(err, code="invalid_record")
            products.append(parse_product(rec))
        except InvalidInput as exc:
            ident = rec.get("id") if isinstance(rec, dict) and isinstance(rec.get("id"), str) else f"line {lineno}"
            report.rejected.append((str(ident), exc.code, exc.message))
    expected = {p.id for p in products}
    publisher = EventPublisher(app)
    progress = Progress(f"ingest {catalog.name} (run {run})", len(products), enabled=show_progress)
    with ThreadPoolExecutor(upload_threads, thread_name_prefix="upload") as pool:
        for batch_start in range(0, len(products), 64):
            batch = products[batch_start : batch_start + 64]
            events = list(pool.map(lambda p: upload_product(store, catalog, p, run), batch))
            publisher.publish(events)
    if prune:
        stale = []
        for info in store.list("products/"):
            pid = PurePosixPath(info.key).stem
            if pid not in expected:
                stale.append(pid)
        for pid in stale:
            for media in store.list(f"media/{pid}/"):
                store.delete(media.key)
            store.delete(f"products/{pid}.json")
        publisher.publish(
            [build_event("removed", store.bucket, f"products/{p}.json", metadata={RUN_METADATA: run}) for p in stale]
        )
        expected |= set(stale)
        progress.total = (progress.total or 0) + len(stale)
    if on_published is not None:
        on_published(len(expected))
    log.info("ingest.published", run=run, products=len(expected))
    _follow(app, queue, expected, report, progress, deadline=start + timeout_s)
    report.seconds = progress.close()
    report.missing = sorted(expected - set(report.outcomes))
    with app.connection_for_write() as conn:
        queue.bind(conn.default_channel).delete()
    return report


def _follow(
    app: IngestApp, queue: Queue, expected: set[str], report: RunReport, progress: Progress, deadline: float
) -> None:
    """Collect outcomes until every expected product has one (reconnecting if the broker drops us)."""

    def on_message(body: Any, message: Message) -> None:
        if isinstance(body, dict) and body.get("outcome") in FINAL:
            pid = str(body.get("product_id"))
            if pid in expected and pid not in report.outcomes:
                report.outcomes[pid] = body
                progress.update(1)
        message.ack()

    with app.connection_for_read() as probe:  # never connects: only says which errors mean "reconnect"
        recoverable = (*probe.connection_errors, *probe.channel_errors, ConnectionError, OSError)
    while len(report.outcomes) < len(expected) and time.monotonic() < deadline:
        try:
            with (
                app.connection_for_read() as conn,
                Consumer(conn, queues=[queue], callbacks=[on_message], accept=["json"]),
            ):
                while len(report.outcomes) < len(expected) and time.monotonic() < deadline:
                    try:
                        conn.drain_events(timeout=0.5)
                    except TimeoutError:
                        continue
        except recoverable as exc:
            log.warning("ingest.follow_reconnect", error=str(exc))
            time.sleep(0.5)


def queue_status(app: IngestApp, peek: int = 20) -> dict[str, Any]:
    """Depth of every ingest queue and the newest dead letters with their reasons."""
    s = app.settings
    out: dict[str, Any] = {"queues": {}, "dead_letters": []}
    app.declare_topology()
    with app.connection_for_write() as conn:
        ch = conn.default_channel
        for name in (s.events_queue, s.text_queue, s.media_queue, s.dead_letter_queue):
            q = ch.queue_declare(name, passive=True)
            out["queues"][name] = {"messages": int(q.message_count), "consumers": int(q.consumer_count)}
        seen = []
        for _ in range(peek):
            msg = ch.basic_get(s.dead_letter_queue, no_ack=False)
            if msg is None:
                break
            seen.append(msg)
            try:
                out["dead_letters"].append(json.loads(msg.body))
            except (ValueError, TypeError):
                out["dead_letters"].append({"raw": str(msg.body)[:200]})
        for msg in seen:  # leave them where they were: status only reads
            ch.basic_reject(msg.delivery_tag, requeue=True)
    return out
