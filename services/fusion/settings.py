from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from prism.index import IndexedServiceSettings


class Settings(IndexedServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRISM_FUSION_", extra="ignore")

    port: int = 50053
    metrics_port: int = 9103
    # The encoders define the collection's vector layout (dimensions, multi-view photos).
    text_encoder_address: str = "127.0.0.1:50051"
    image_encoder_address: str = "127.0.0.1:50052"
    encoder_timeout_s: float = 10.0
    # Index product videos ("video", and "video_shared" with trained heads): the video encoder pools
    # frames of the image network, so its vectors have the image encoder's dimension.
    index_videos: bool = True
    # BM25 statistics kept current as products arrive; the gateway reads the same file.
    lexical_stats: Path | None = Path("var/index/lexical.json")
    # Most products per Upsert call (a worker sends a batch; bigger ones are refused, not cut).
    max_products_per_call: int = 256
