"""The gateway and the fusion service on the edge engine (HNSW in-process): same answers as local mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


def test_gateway_and_fusion_serve_from_the_edge_engine(indexed_suite: Any, myntra_slice: Path, tmp_path: Path) -> None:
    from prism.catalog import Catalog
    from prism.edge_index import EdgeProductIndex
    from prism.fusion import FusionCore
    from prism.pipeline import Ingestor
    from services.gateway.server import build_gateway
    from services.gateway.settings import Settings

    settings = Settings(
        port=0,
        http_port=0,
        text_encoder_address=indexed_suite.encoders["text-encoder"].address,
        image_encoder_address=indexed_suite.encoders["image-encoder"].address,
        index_path=tmp_path / "edge",
        index_engine="edge",
        collection="edge",
        lexical_reload_s=0,
    )
    gateway = build_gateway(settings)
    try:
        assert isinstance(gateway.core.index, EdgeProductIndex)
        core = FusionCore(gateway.core.index, indexed_suite.fusion_core.layout, model_id="edge-test")
        report = Ingestor(core, gateway.core.text, gateway.core.image).ingest(
            Catalog.open(myntra_slice), show_progress=False
        )
        assert report.indexed == 300
        gateway.core.index.optimize()  # build the HNSW graph, as after a bulk load
        gateway.core.set_lexical(core.lexical)
        with TestClient(gateway.app) as client:
            for query in ({"text": "blue shirt", "k": 10}, {"text": "蓝色衬衫", "k": 10}):
                edge = client.post("/v1/search", json=query).json()["hits"]
                local = [h["id"] for h in indexed_suite_search(indexed_suite, query)]
                # HNSW vs exact and the engines' own BM25 idf: near-ties may swap, the head stays
                overlap = len({h["id"] for h in edge} & set(local))
                assert edge[0]["id"] == local[0] and overlap >= 8, (query, overlap)
            pid = edge[0]["id"]
            similar = client.get(f"/v1/products/{pid}/similar", params={"k": 5})
            assert similar.status_code == 200 and pid not in [h["id"] for h in similar.json()["hits"]]
    finally:
        gateway.grpc.stop(grace=0)
        gateway.core.index.close()


def indexed_suite_search(suite: Any, query: dict[str, Any]) -> list[dict[str, Any]]:
    import httpx

    r = httpx.post(f"{suite.url}/v1/search", json=query, timeout=60)
    r.raise_for_status()
    return list(r.json()["hits"])
