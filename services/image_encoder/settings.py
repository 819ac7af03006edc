from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from prism.models.precision import Precision
from prism.models.views import VIEWS, View
from prism.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRISM_IMAGE_ENCODER_", extra="ignore")

    port: int = 50052
    metrics_port: int = 9102
    # Photos the batcher gathers from concurrent requests into one model call.
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    # Images (photos x views) per forward pass of the network.  None: on a CPU as many as keep the
    # activations in the last-level cache (6 fp32 / 12 bf16 with 32 MiB: 1.8x / 1.35x the photos/s
    # of 32 there), 32 on an accelerator and for int8; see prism.models.efficientnet.default_batch_size.
    forward_batch: int | None = Field(default=None, ge=1)
    max_image_bytes: int = 20 * 2**20
    # Checked from the header before any pixel is decoded (decompression bombs).
    max_image_pixels: int = 40_000_000
    threads: int | None = None
    # Threads that resize each photo into its views (None: 1 on a CPU, up to 8 with a GPU, where
    # the views, not the network, bound the encoder; see prism.models.efficientnet).
    preprocess_threads: int | None = Field(default=None, ge=1)
    cache_vectors: bool = True
    # Views of each photo, indexed together and matched by MaxSim (see prism.models.efficientnet.VIEWS);
    # empty: one centre-crop vector per photo.
    views: tuple[View, ...] = VIEWS
    # Folder of the object store for media passed by key (embedded mode); unset: bytes only.
    store_dir: str | None = None
    # fp32 | bf16 | int8 (CPU only: static int8 through ONNX Runtime) | fp16 (CUDA only); see
    # prism.models.precision.  The video encoder runs the image network with this same setting.
    precision: Precision = "fp32"
    # int8 only: photos whose activation ranges calibrate the int8 graph, spread evenly over the
    # folder's files (unset: the product photos of the catalogs under PRISM_DATA_DIR).
    calibration_dir: Path | None = None
    calibration_photos: int = Field(default=64, ge=1, le=4096)
