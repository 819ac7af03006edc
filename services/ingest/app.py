"""The Celery app of the ingest workers: broker topology, task settings, the event router step.

Topology on RabbitMQ (declared by workers and by publishers, all durable):
- ``prism.s3-events`` (fanout exchange -> quorum queue): S3 event records as MinIO's AMQP target
  sends them; the worker's :class:`~services.ingest.router.EventRouterStep` turns each into a task.
- ``prism.tasks`` (topic exchange) -> quorum queues ``prism.text`` (record changes: cheap) and
  ``prism.media`` (photos to encode: heavy), so a media backlog never starves catalog edits.
  Topic, not direct: Celery's native delayed delivery (retry countdowns on quorum queues) needs it.
- ``prism.dlx`` -> ``prism.dead``: permanent failures with their reason, and messages that RabbitMQ
  dead-letters after ``x-delivery-limit`` redeliveries (a task that keeps killing its worker).
- ``prism.outcomes`` (direct): one message per finished product, routed by ``prism ingest`` run id,
  which is how ``prism ingest`` follows its run until the index has caught up.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from .settings import Settings

SYNC_TASK = "prism.ingest.sync_product"


class IngestApp(Celery):  # type: ignore[misc]
    """A Celery app that carries its typed settings."""

    settings: Settings

    @property
    def in_memory(self) -> bool:
        return self.settings.broker_url.startswith("memory://")

    def queue_arguments(self) -> dict[str, Any]:
        if self.in_memory:
            return {}  # the in-process transport has no queue types
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.settings.dead_letter_exchange,
            "x-dead-letter-routing-key": self.settings.dead_letter_queue,
            "x-delivery-limit": self.settings.delivery_limit,
        }

    def events_queue(self) -> Queue:
        s = self.settings
        return Queue(
            s.events_queue,
            Exchange(s.events_exchange, type="fanout", durable=True),
            routing_key=s.events_queue,
            durable=True,
            queue_arguments=self.queue_arguments(),
        )

    def dead_letter_queue(self) -> Queue:
        s = self.settings
        return Queue(
            s.dead_letter_queue,
            Exchange(s.dead_letter_exchange, type="direct", durable=True),
            routing_key=s.dead_letter_queue,
            durable=True,
            queue_arguments={} if self.in_memory else {"x-queue-type": "quorum"},
        )

    def outcomes_exchange(self) -> Exchange:
        return Exchange(self.settings.outcomes_exchange, type="direct", durable=True)

    def declare_topology(self) -> None:
        """Declare every exchange and queue (idempotent): publishers may run before any worker."""
        with self.connection_for_write() as conn:
            channel = conn.default_channel
            for q in (*self.conf.task_queues, self.events_queue(), self.dead_letter_queue()):
                q.bind(channel).declare()
            self.outcomes_exchange().bind(channel).declare()


def create_app(settings: Settings | None = None) -> IngestApp:
    settings = settings or Settings()
    app = IngestApp("prism.ingest", broker=settings.broker_url, set_as_current=False)
    app.settings = settings
    tasks_x = Exchange(settings.tasks_exchange, type="topic", durable=True)
    qargs = app.queue_arguments()
    memory = app.in_memory
    app.conf.update(
        # JSON only: nothing executable crosses the broker, and workers may run as root.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # Acknowledge after the work is done; a worker that dies mid-task gives the message back.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_queues=[
            Queue(settings.text_queue, tasks_x, routing_key=settings.text_queue, durable=True, queue_arguments=qargs),
            Queue(settings.media_queue, tasks_x, routing_key=settings.media_queue, durable=True, queue_arguments=qargs),
        ],
        task_default_queue=settings.text_queue,
        task_default_exchange=settings.tasks_exchange,
        task_default_exchange_type="topic",
        task_default_routing_key=settings.text_queue,
        task_create_missing_queues=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_heartbeat=10 if not memory else 0,
        broker_transport_options={"polling_interval": 0.005} if memory else {"confirm_publish": True},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
    )
    from . import router, tasks

    tasks.register(app)
    app.steps["consumer"].add(router.EventRouterStep)
    return app
