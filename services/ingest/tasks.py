"""The ingest task: bring one product's point in the index in line with the object store.

``sync_product(product_id)`` reads ``products/<id>.json`` as it is *now* (not as the event saw it),
so events may arrive late, twice or out of order and the index still ends equal to the store:
a missing record deletes the point, an unchanged content hash does nothing, a changed record with
unchanged media re-encodes only the text (the fusion service keeps the image vectors), and changed
media are forwarded to the media queue where the photos are downloaded and encoded.

Transient failures (an encoder, the fusion service or the store unavailable or slow) retry with
exponential backoff and full jitter; permanent ones (corrupt media, an invalid record) go straight
to the dead-letter queue with the reason.  Every task ends with one outcome message for the
``prism ingest`` run that caused it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import structlog
from celery import Task
from celery.utils.time import get_exponential_backoff_interval

from prism import metrics, tracing
from prism.catalog import parse_product, validate_product_id
from prism.encoding import EncoderClient
from prism.errors import DeadlineExceeded, InvalidInput, NotFound, PrismError, Unavailable
from prism.fusion import FusionClient, ProductWriter
from prism.logs import bind_request_id
from prism.pipeline import encode_products, encoder_models, prepare_product
from prism.storage import FolderStore, ObjectInfo, ObjectStore, StoreSettings, open_store

from .app import SYNC_TASK, IngestApp

log = structlog.get_logger(__name__)

MAX_RECORD_BYTES = 1 * 2**20
TRANSIENT = (Unavailable, DeadlineExceeded)


@dataclass
class Resources:
    """What a worker process opens once: encoder and fusion clients, the object store."""

    text: EncoderClient
    image: EncoderClient
    fusion: ProductWriter
    store: ObjectStore
    models: str = ""
    video: EncoderClient | None = None

    def model_ids(self) -> str:
        if not self.models:  # asked lazily: the encoders may still be starting when the worker does
            self.models = encoder_models(self.text, self.image)
        return self.models


# Keyed by the app itself, weakly, not by id(app): once an app is collected its id may be reused by
# the next app created in the process, which would then inherit clients to the old app's services.
_resources: weakref.WeakKeyDictionary[IngestApp, Resources] = weakref.WeakKeyDictionary()
_resources_lock = threading.Lock()


def resources(app: IngestApp) -> Resources:
    with _resources_lock:
        res = _resources.get(app)
        if res is None:
            s = app.settings
            res = Resources(
                text=EncoderClient(s.text_encoder_address, timeout_s=s.encoder_timeout_s),
                image=EncoderClient(s.image_encoder_address, timeout_s=s.encoder_timeout_s),
                fusion=FusionClient(s.fusion_address, timeout_s=s.encoder_timeout_s),
                store=open_store(StoreSettings()),
                video=EncoderClient(s.video_encoder_address, timeout_s=s.encoder_timeout_s)
                if s.video_encoder_address
                else None,
            )
            _resources[app] = res
        return res


def use_resources(app: IngestApp, res: Resources) -> None:
    """Run this app's tasks against given clients (the embedded suite passes its own)."""
    with _resources_lock:
        _resources[app] = res


@dataclass(frozen=True)
class Outcome:
    product_id: str
    outcome: str  # indexed | unchanged | deleted | absent | skipped | forwarded | failed
    code: str = ""
    reason: str = ""

    @property
    def final(self) -> bool:
        return self.outcome != "forwarded"


def objects_fingerprint(infos: list[ObjectInfo]) -> str:
    """The media's identity from the store's metadata (key, size, etag): no download needed."""
    h = hashlib.sha256()
    for i in infos:
        h.update(f"{i.key}\0{i.size}\0{i.etag}\n".encode())
    return h.hexdigest()


def sync(app: IngestApp, res: Resources, product_id: str, *, source: str, on_media_queue: bool) -> Outcome:
    """One product, store -> index; raises transient errors, returns permanent ones as outcomes."""
    s = app.settings
    pid = validate_product_id(product_id)
    try:
        raw = res.store.get(f"products/{pid}.json", MAX_RECORD_BYTES)
    except NotFound:
        if source == "media":
            return Outcome(pid, "skipped", reason="no record yet; its own event will index it")
        deleted = res.fusion.delete([pid])
        return Outcome(pid, "deleted" if deleted else "absent")
    try:
        rec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"products/{pid}.json is not JSON", code="invalid_record") from exc
    if not isinstance(rec, dict) or rec.get("id") != pid:
        raise InvalidInput(f"products/{pid}.json does not describe product {pid!r}", code="invalid_record")
    product = parse_product(rec)
    photo_keys = list(product.images[: s.max_images_per_product])
    video_keys = list(product.videos[: s.max_videos_per_product]) if res.video is not None else []
    keys = photo_keys + video_keys
    infos: list[ObjectInfo] = []
    for key in keys:
        limit = s.max_video_bytes if key in video_keys else s.max_media_bytes
        try:
            info = res.store.stat(key)
        except NotFound as exc:
            raise InvalidInput(f"media {key!r} is not in the store", code="missing_media") from exc
        if info.size > limit:
            raise InvalidInput(f"media {key!r} is larger than {limit} bytes", code="media_too_large")
        if info.size == 0:
            raise InvalidInput(f"media {key!r} is empty (0 bytes)", code="empty_media")
        infos.append(info)
    fingerprint = objects_fingerprint(infos)
    extra = {"catalog_root": str(res.store.root)} if isinstance(res.store, FolderStore) else {"media_store": "s3"}
    prepared = prepare_product(product, [], models=res.model_ids(), extra=extra, fingerprint=fingerprint)
    current = res.fusion.state([pid]).get(pid)
    if current is not None and current.content_hash == prepared.content_hash:
        return Outcome(pid, "unchanged")
    media_kept = (
        current is not None and current.media_fingerprint == fingerprint and (not keys or "image" in current.vectors)
    )
    if keys and not media_kept and not on_media_queue:
        return Outcome(pid, "forwarded")
    keep_media: set[str] = set()
    if media_kept or not keys:
        keep_media = {pid} if keys else set()
    else:
        media = tuple(res.store.get(k, s.max_media_bytes) for k in photo_keys)
        videos = tuple(res.store.get(k, s.max_video_bytes) for k in video_keys)
        prepared = prepare_product(
            product, media, models=res.model_ids(), extra=extra, fingerprint=fingerprint, videos=videos
        )
    updates, failed = encode_products(
        res.text, res.image, [prepared], timeout_s=s.encoder_timeout_s, keep_media=keep_media, video=res.video
    )
    if failed:
        _, code, reason = failed[0]
        raise InvalidInput(reason, code=code)
    res.fusion.upsert(updates)
    return Outcome(pid, "indexed")


def publish_outcome(app: IngestApp, run: str | None, outcome: Outcome) -> None:
    metrics.INGESTED.labels(outcome.outcome).inc()
    if not run:
        return
    with app.producer_or_acquire() as producer:
        producer.publish(
            {"run": run, **outcome.__dict__},
            exchange=app.outcomes_exchange(),
            routing_key=run,
            serializer="json",
            declare=[app.outcomes_exchange()],
            retry=True,
        )


def dead_letter(app: IngestApp, body: dict[str, Any]) -> None:
    """Park a message that cannot succeed, with its reason, on the dead-letter queue."""
    q = app.dead_letter_queue()
    with app.producer_or_acquire() as producer:
        producer.publish(
            {**body, "time": time.time()},
            exchange=q.exchange,
            routing_key=q.routing_key,
            serializer="json",
            declare=[q],
            delivery_mode=2,
            retry=True,
        )
    metrics.DEAD_LETTERED.labels(str(body.get("code", "unknown"))).inc()
    log.warning("ingest.dead_lettered", **{k: v for k, v in body.items() if k != "time"})


def register(app: IngestApp) -> None:
    s = app.settings

    # shared=False: Celery's default (shared=True) also files every decorated function in a
    # process-wide list that is replayed into each app finalized later, so a second app in one
    # process (a test session, prism eval after prism ingest) would get the first app's closure,
    # bound to the first app's settings, clients, store and broker, and warn that the name is
    # taken (DuplicateTaskNameWarning). This closure belongs to this app only.
    @app.task(bind=True, name=SYNC_TASK, max_retries=s.max_retries, acks_late=True, shared=False)  # type: ignore[untyped-decorator]
    def sync_product(
        self: Task,
        product_id: str,
        run: str | None = None,
        source: str = "record",
        media: bool = False,
        trace: dict[str, str] | None = None,
    ) -> dict[str, str]:
        bind_request_id(f"{run or 'event'}:{product_id}")
        with tracing.extracted(trace or {}), tracing.span("ingest.sync", product_id=product_id, media=media):
            return _sync_task(self, product_id, run, source, media)

    def _sync_task(self: Task, product_id: str, run: str | None, source: str, media: bool) -> dict[str, str]:
        try:
            outcome = sync(app, resources(app), product_id, source=source, on_media_queue=media)
        except TRANSIENT as exc:
            if self.request.retries >= s.max_retries:
                outcome = Outcome(product_id, "failed", "retries_exhausted", str(exc))
            else:
                countdown = get_exponential_backoff_interval(
                    factor=1, retries=self.request.retries, maximum=s.retry_backoff_max_s, full_jitter=True
                )
                log.info("ingest.retry", product_id=product_id, error=str(exc), countdown=countdown)
                raise self.retry(exc=exc, countdown=countdown) from exc
        except PrismError as exc:  # invalid record, corrupt or missing media: retrying cannot help
            outcome = Outcome(product_id, "failed", exc.code, exc.message)
        if outcome.outcome == "forwarded":
            # An explicit producer: publishing from a pool thread through the implicit one loses
            # the message on the in-memory transport (seen with Celery 5.7); RabbitMQ is fine either way.
            with app.producer_or_acquire() as producer:
                self.apply_async(
                    kwargs={
                        "product_id": product_id,
                        "run": run,
                        "source": source,
                        "media": True,
                        "trace": tracing.inject(),
                    },
                    queue=s.media_queue,
                    routing_key=s.media_queue,
                    producer=producer,
                )
        elif outcome.outcome == "failed":
            dead_letter(
                app,
                {
                    "product_id": product_id,
                    "code": outcome.code,
                    "reason": outcome.reason,
                    "task": SYNC_TASK,
                    "run": run,
                    "attempts": self.request.retries + 1,
                },
            )
        if outcome.final:
            publish_outcome(app, run, outcome)
        log.debug("ingest.synced", product_id=product_id, outcome=outcome.outcome, code=outcome.code or None)
        return dict(outcome.__dict__)

    del sync_product  # registered on the app by the decorator; callers use app.tasks[SYNC_TASK]


__all__ = ["Outcome", "Resources", "register", "resources", "sync", "use_resources"]
