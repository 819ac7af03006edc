from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from prism.settings import ServiceSettings

# The settings that name things on the broker (queues and exchanges).
BROKER_NAMES = (
    "events_exchange",
    "events_queue",
    "tasks_exchange",
    "text_queue",
    "media_queue",
    "dead_letter_exchange",
    "dead_letter_queue",
    "outcomes_exchange",
)


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRISM_INGEST_", extra="ignore")

    port: int = 50054  # grpc.health.v1 only: SERVING while the worker consumes
    metrics_port: int = 9104
    # RabbitMQ in production; "memory://" runs the same tasks in-process (embedded mode).
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    text_encoder_address: str = "127.0.0.1:50051"
    image_encoder_address: str = "127.0.0.1:50052"
    # Empty: no video encoder; products' videos are then left out (photos and text still indexed).
    video_encoder_address: str = "127.0.0.1:50055"
    fusion_address: str = "127.0.0.1:50053"
    encoder_timeout_s: float = 120.0
    # Worker threads per process: tasks mostly wait on the encoders, whose server-side batching
    # merges the concurrent calls into model batches.
    concurrency: int = 8
    # Names on the broker.
    events_exchange: str = "prism.s3-events"
    events_queue: str = "prism.s3-events"
    tasks_exchange: str = "prism.tasks"
    text_queue: str = "prism.text"
    media_queue: str = "prism.media"
    dead_letter_exchange: str = "prism.dlx"
    dead_letter_queue: str = "prism.dead"
    outcomes_exchange: str = "prism.outcomes"
    # Transient failures (encoder or store unavailable) retry with exponential backoff and jitter.
    max_retries: int = 10
    retry_backoff_max_s: int = 30
    # A message redelivered this often (a task that kills its worker) is dead-lettered by RabbitMQ.
    delivery_limit: int = 5
    max_media_bytes: int = 20 * 2**20
    max_images_per_product: int = 4
    max_video_bytes: int = 50 * 2**20
    max_videos_per_product: int = 2

    def with_broker_prefix(self, prefix: str) -> Settings:
        """These settings with every broker name under ``prefix`` (``<prefix>.text`` ...): apps that
        share one broker -- kombu's in-memory transport is one per process -- without taking each
        other's messages."""
        defaults = type(self).model_fields
        names = {n: f"{prefix}.{str(defaults[n].default).removeprefix('prism.')}" for n in BROKER_NAMES}
        return self.model_copy(update=names)
