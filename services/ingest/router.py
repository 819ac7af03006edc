"""Object events -> tasks: the worker's event-consumer step and the webhook that share one router."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from celery import bootsteps
from kombu.message import Message
from kombu.messaging import Consumer

from prism import metrics, tracing
from prism.errors import InvalidInput
from prism.events import parse_event, product_of_key

from .app import SYNC_TASK, IngestApp

log = structlog.get_logger(__name__)


def route_event(app: IngestApp, body: bytes | str | Mapping[str, Any]) -> int:
    """Dispatch one ``sync_product`` task per product event; returns how many were dispatched.

    Record events go to the text queue (the task forwards to the media queue only when photos
    changed), unless the record says its upload wrote new media (``prism.events.MEDIA_METADATA``);
    media events go straight to the media queue.  Objects outside the layout are
    ignored.  An invalid message raises InvalidInput (the caller dead-letters it or answers 400).
    """
    s = app.settings
    events = parse_event(body)
    sync = app.tasks[SYNC_TASK]
    n = 0
    for ev in events:
        owner = product_of_key(ev.key)
        if owner is None:
            metrics.EVENTS.labels("ignored").inc()
            continue
        pid, part = owner
        # A record whose upload wrote new media skips the text queue: that pass would only forward it.
        to_media = part == "media" or (part == "record" and ev.kind == "created" and ev.media_changed)
        queue = s.media_queue if to_media else s.text_queue
        sync.apply_async(
            kwargs={
                "product_id": pid,
                "run": ev.run,
                "source": part,
                "media": to_media,
                "trace": tracing.inject(),  # the event's span continues in the task
            },
            queue=queue,
            routing_key=queue,
        )
        metrics.EVENTS.labels(f"{part}_{ev.kind}").inc()
        n += 1
    return n


class EventRouterStep(bootsteps.ConsumerStep):  # type: ignore[misc]
    """Consumes the S3 event queue inside the worker (MinIO's AMQP target publishes there)."""

    def get_consumers(self, channel: Any) -> list[Consumer]:
        app: IngestApp = self.app
        return [
            Consumer(
                channel,
                queues=[app.events_queue()],
                # MinIO sends JSON with or without a content type: take the raw body and parse it here.
                on_message=self.on_message,
                no_ack=False,
            )
        ]

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.app = parent.app

    def on_message(self, message: Message) -> None:
        from .tasks import dead_letter

        app: IngestApp = self.app
        try:
            route_event(app, message.body)
        except InvalidInput as exc:
            dead_letter(app, {"code": exc.code, "reason": exc.message, "task": "route_event"})
            metrics.EVENTS.labels("invalid").inc()
        # Ack only once the tasks are published (confirmed): a crash before this redelivers the event.
        message.ack()
