from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from prism.models.views import VIEWS, View
from prism.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRISM_IMAGE_ENCODER_", extra="ignore")

    port: int = 50052
    metrics_port: int = 9102
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    max_image_bytes: int = 20 * 2**20
    # Checked from the header before any pixel is decoded (decompression bombs).
    max_image_pixels: int = 40_000_000
    threads: int | None = None
    cache_vectors: bool = True
    # Views of each photo, indexed together and matched by MaxSim (see prism.models.efficientnet.VIEWS);
    # empty: one centre-crop vector per photo.
    views: tuple[View, ...] = VIEWS
    # Folder of the object store for media passed by key (embedded mode); unset: bytes only.
    store_dir: str | None = None
