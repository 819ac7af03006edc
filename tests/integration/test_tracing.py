"""OpenTelemetry spans: one search is one trace across the gateway and the text encoder (gRPC
metadata carries the context); decode and fuse get their own spans."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spans() -> Any:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from prism.tracing import setup_tracing

    exporter = InMemorySpanExporter()
    # Once per process: later tests keep exporting into this in-memory exporter (cheap).
    assert setup_tracing("prism-tests", exporter=exporter)
    return exporter


def test_a_text_search_is_one_trace_across_gateway_and_encoder(spans: Any, indexed_suite: Any) -> None:
    spans.clear()
    r = httpx.post(f"{indexed_suite.url}/v1/search", json={"text": "blue shirt", "k": 5}, timeout=60)
    assert r.status_code == 200
    by_name: dict[str, list[Any]] = {}
    for s in spans.get_finished_spans():
        by_name.setdefault(s.name, []).append(s)
    assert "prism.search" in by_name and "prism.encode" in by_name, sorted(by_name)
    search = by_name["prism.search"][0]
    assert search.attributes["prism.kind"] == "text"
    encode = [s for s in by_name["prism.encode"] if s.attributes.get("prism.service") == "text-encoder"]
    assert encode and encode[0].context.trace_id == search.context.trace_id, "the encoder span joined the trace"


def test_photo_search_has_decode_spans_and_writes_have_fuse_spans(spans: Any, indexed_suite: Any) -> None:
    import numpy as np

    from prism.fusion import FusionCore, ProductUpdate
    from prism.index import IndexSettings, ProductIndex
    from tests.media_samples import jpeg

    # A photo no vector cache has seen (the cache outlives test runs), so it really is decoded.
    rng = np.random.default_rng()
    photo = jpeg((120, 160), colour=tuple(int(c) for c in rng.integers(0, 255, 3)))  # type: ignore[arg-type]
    photo += rng.bytes(16)  # trailing bytes after EOI: same picture, new content hash
    spans.clear()
    r = httpx.post(f"{indexed_suite.url}/v1/search", files={"image": ("q.jpg", photo)}, timeout=60)
    assert r.status_code == 200
    names = {s.name for s in spans.get_finished_spans()}
    assert {"prism.search", "prism.decode", "prism.encode", "prism.rpc"} <= names, names
    layout = indexed_suite.fusion_core.layout
    core = FusionCore(ProductIndex.open(IndexSettings(collection="traced")), layout, model_id="t")
    vec = np.ones((1, layout.dims["text"]), dtype=np.float32)
    spans.clear()
    core.upsert([ProductUpdate("p1", {"id": "p1", "title": "red dress"}, "h", modalities={"text": vec})])
    fuse = [s for s in spans.get_finished_spans() if s.name == "prism.fuse"]
    assert fuse and fuse[0].attributes["prism.products"] == 1
