from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from prism.models.views import VIEWS, View
from prism.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRISM_VIDEO_ENCODER_", extra="ignore")

    port: int = 50055
    metrics_port: int = 9105
    # Clips per model batch; their frames go through the image network together.
    max_batch: int = 4
    batch_wait_ms: float = 5.0
    # Checked from the container header before any frame is decoded.
    max_video_bytes: int = 50 * 2**20
    max_duration_s: float = 60.0
    max_width: int = 3840
    max_height: int = 3840
    max_frames: int = 3600
    decode_timeout_s: float = 10.0
    # Frames sampled per clip (uniform in time plus scene changes), each encoded with the views below.
    sample_frames: int = 12
    views: tuple[View, ...] = VIEWS
    threads: int | None = None
    # No precision of its own: the frames go through the image network as the image encoder runs it
    # (PRISM_IMAGE_ENCODER_PRECISION and its calibration settings), so clips and photos share a space.
    cache_vectors: bool = True
    # Folder of the object store for media passed by key (embedded mode); unset: bytes only.
    store_dir: str | None = None
