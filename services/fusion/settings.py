from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from prism.index import IndexSettings
from prism.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRISM_FUSION_", extra="ignore")

    port: int = 50053
    metrics_port: int = 9103
    # The encoders define the collection's vector layout (dimensions, multi-view photos).
    text_encoder_address: str = "127.0.0.1:50051"
    image_encoder_address: str = "127.0.0.1:50052"
    encoder_timeout_s: float = 10.0
    # Vector index: a Qdrant server URL, or embedded on a folder (or in memory when neither is set).
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    index_path: Path | None = Path("var/index")
    collection: str = "products"
    # Embedded engine when no qdrant_url: "local" (exact search, fine to ~100k products) or "edge"
    # (Qdrant's engine in-process with an HNSW index, for up to millions: prism.edge_index).
    index_engine: str = "local"
    # BM25 statistics kept current as products arrive; the gateway reads the same file.
    lexical_stats: Path | None = Path("var/index/lexical.json")
    # Most products per Upsert call (a worker sends a batch; bigger ones are refused, not cut).
    max_products_per_call: int = 256

    def index_settings(self) -> IndexSettings:
        return IndexSettings(
            collection=self.collection,
            url=self.qdrant_url,
            api_key=self.qdrant_api_key,
            path=None if self.qdrant_url else self.index_path,
            engine=self.index_engine,
        )
