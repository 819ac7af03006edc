from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from prism.models.precision import Precision
from prism.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRISM_TEXT_ENCODER_", extra="ignore")

    port: int = 50051
    metrics_port: int = 9101
    # "e5-small": multilingual (Chinese and English queries in one space); "minilm-l6": English only.
    model: str = "e5-small"
    max_tokens: int = 256
    # fp32 | bf16 (CPU: ~2x, cosine > 0.9999 to fp32) | int8 (CPU only) | fp16 (CUDA only): see
    # prism.models.precision.  Part of the model id, so cached vectors of two precisions never mix.
    precision: Precision = "fp32"
    max_batch: int = 64
    batch_wait_ms: float = 5.0
    # Longest text accepted per item; longer ones are refused rather than silently cut.
    max_text_chars: int = 100_000
    cache_vectors: bool = True
