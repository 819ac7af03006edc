from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from prism.index import IndexedServiceSettings


class Settings(IndexedServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRISM_GATEWAY_", extra="ignore")

    port: int = 50050  # gRPC SearchService
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    text_encoder_address: str = "127.0.0.1:50051"
    image_encoder_address: str = "127.0.0.1:50052"
    # Empty: no video encoder in this deployment (video queries get 400 unsupported_modality).
    video_encoder_address: str = "127.0.0.1:50055"
    max_video_bytes: int = 50 * 2**20
    encoder_timeout_s: float = 10.0
    default_k: int = 20
    max_k: int = 100
    max_query_chars: int = 1_000
    max_upload_bytes: int = 20 * 2**20
    max_image_pixels: int = 40_000_000
    # Query photos and videos are never stored: only their size, type and sha256 are logged. For
    # debugging, a folder here keeps each one named by its hash, within these bounds (oldest removed).
    retain_query_media_dir: Path | None = None
    retain_query_media_max_files: int = Field(default=1000, ge=1)
    retain_query_media_max_bytes: int = Field(default=2**30, ge=1)
    # Attribute that groups colour variants of one product (H&M's product_code).
    group_attribute: str = "product_code"
    facet_attributes: tuple[str, ...] = ("type", "colour")
    # A photo query takes this many candidates from the mean image vector and rescores them by
    # MaxSim over every view (Myntra: the same Recall@10 as scoring every product, at a fraction).
    rescore_candidates: int = 100
    # Hybrid text search: weighted reciprocal-rank fusion of dense text and BM25 lists of this size.
    # BM25 statistics of the indexed catalog, written by ingestion (absent: dense text search only).
    lexical_stats: Path | None = None
    # Reload the statistics file when it changed (the fusion service rewrites it as products stream
    # in); 0 disables (embedded mode shares the fusion service's statistics object in memory).
    lexical_reload_s: float = 30.0
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    rrf_k: int = 60
    # Chinese shop terms read before CC-CEDICT, added to Prism's built-in glossary (prism.glossary):
    # one "term<TAB>gloss[; gloss]" per line
    glossary_file: Path | None = None
    hybrid_pool: int = 100
    # S3 event webhook (POST /v1/events/s3): forwarded to this broker's events exchange when set.
    events_broker_url: str | None = None
    events_exchange: str = "prism.s3-events"
    events_queue: str = "prism.s3-events"
    # Bearer token the webhook requires (empty: none, for loopback-only setups).
    events_token: str = ""
    # Serve the photos of products ingested through the S3 path from the object store (PRISM_STORE_*).
    media_from_store: bool = False
    # API keys: "name:key:scope+scope,..." (scopes: search, ingest, admin) and/or a file of such lines.
    # None configured: the gateway is open (the embedded demo on loopback).
    api_keys: str = ""
    api_keys_file: Path | None = None
    # Per-key token bucket; anonymous callers (open gateway) are limited per address only if asked.
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 100
    rate_limit_anonymous: bool = False
    # Origins allowed to call the API from a browser (the web page on another host); empty: same origin.
    cors_origins: tuple[str, ...] = ()
    # Facets are counted over this many top-ranked candidates.
    facet_pool: int = 200
    # Personal context: the products a shopper viewed recently join the ranking as one more list
    # (products like them, recommend-style), with this weight against the query's own 1.0.
    context_weight: float = 0.5
    # Photo and video queries with trained heads: weight of "the same kind of product" (the query's
    # shared-space vector against the products' projected photos) under the near-duplicate match.
    visual_kind_weight: float = 0.5
    max_context_ids: int = 20
    # Weights of the image and text similarity in "similar products".
    similar_image_weight: float = 0.5
    # Reranking text queries with the cross-encoder ``prism train`` wrote into the models folder:
    # "auto" = on when training found it beats the first stage on held-out products; "on"/"off"
    # force it (a request may still ask either way with its ``rerank`` field).
    rerank: Literal["auto", "on", "off"] = "auto"
    rerank_head: int = 20  # the top of the first-stage ranking that is reranked
    # Skip reranking (the response says so) when the search would overrun this many milliseconds.
    rerank_budget_ms: float = 300.0
