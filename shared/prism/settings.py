"""Settings shared by every service: one typed object per service, read from environment variables.

Each service defines ``class Settings(ServiceSettings)`` with its own ``env_prefix``
(``PRISM_GATEWAY_``, ``PRISM_TEXT_ENCODER_`` ...).  Paths common to all services (data, cache,
trained models) are read from ``PRISM_*`` by :class:`CommonSettings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRISM_", extra="ignore")

    # The read-only third-party data lives beside the repository; never copied into it.
    data_dir: Path = Path("../shared/data")
    # Converted weights, feature caches, embedded index and object store (git-ignored).
    var_dir: Path = Path("var")
    cache_dir: Path = Path("var/cache")
    # Trained heads written by `prism train` (absent: pretrained single-modality spaces only).
    models_dir: Path | None = None
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    device: str | None = Field(default=None, description="torch device; default CUDA when present, else CPU")
    # A CLIP / Chinese-CLIP / SigLIP checkpoint folder (transformers format): when set, both the text
    # and the image encoder serve its two towers instead of e5 + EfficientNet (one shared space).
    clip_checkpoint: Path | None = None


class ServiceSettings(BaseSettings):
    """Fields every gRPC service has; subclasses set ``model_config`` with their env prefix."""

    model_config = SettingsConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0
    max_workers: int = 16
    # Explicit limits: gRPC's 4 MB default is too small for image batches and too big to leave implicit.
    max_message_bytes: int = 32 * 2**20
    grace_seconds: float = 10.0
