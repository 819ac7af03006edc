"""The gateway against the real embedded suite: real encoders over gRPC, real models, embedded Qdrant."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from prism.gen.common.v1 import types_pb2
from prism.gen.search.v1 import search_pb2, search_pb2_grpc
from tests.media_samples import bad_images, odd_images

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def http(indexed_suite: Any) -> httpx.Client:
    with httpx.Client(base_url=indexed_suite.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def grpc_stub(indexed_suite: Any) -> search_pb2_grpc.SearchServiceStub:
    channel = grpc.insecure_channel(indexed_suite.gateway.grpc.address)
    yield search_pb2_grpc.SearchServiceStub(channel)
    channel.close()


def _first_product(myntra_slice: Path) -> dict[str, Any]:
    return json.loads((myntra_slice / "products.jsonl").read_text().splitlines()[0])


def test_text_search_shape_pagination_and_filters(http: httpx.Client) -> None:
    r = http.post("/v1/search", json={"text": "blue t-shirt for men", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"hits", "facets", "next_cursor", "took_ms", "reranked"}
    assert len(body["hits"]) == 5
    hit = body["hits"][0]
    assert set(hit) == {"id", "title", "score", "image_url", "matched"} and hit["matched"] in ("text", "lexical")
    assert [h["score"] for h in body["hits"]] == sorted((h["score"] for h in body["hits"]), reverse=True)
    assert "colour" in body["facets"] and sum(body["facets"]["colour"].values()) == 200  # the facet pool
    page2 = http.post("/v1/search", json={"text": "blue t-shirt for men", "k": 5, "cursor": body["next_cursor"]}).json()
    assert len(page2["hits"]) == 5
    assert not {h["id"] for h in page2["hits"]} & {h["id"] for h in body["hits"]}
    # a cursor belongs to its query
    other = http.post("/v1/search", json={"text": "red dress", "k": 5, "cursor": body["next_cursor"]})
    assert other.status_code == 400 and other.json()["error"]["code"] == "invalid_cursor"
    blue = http.post("/v1/search", json={"text": "shirt", "k": 10, "filters": {"colour": "Blue"}}).json()
    assert blue["hits"]
    for h in blue["hits"]:
        assert http.get(f"/v1/products/{h['id']}").json()["attributes"]["colour"] == "Blue"


def test_rerank_asked_for_without_a_trained_model_says_so(http: httpx.Client) -> None:
    body = http.post("/v1/search", json={"text": "blue t-shirt for men", "k": 5, "rerank": True}).json()
    assert body["reranked"] is False and body["rerank_skipped"] == "no_model" and len(body["hits"]) == 5
    plain = http.post("/v1/search", json={"text": "blue t-shirt for men", "k": 5}).json()
    assert "rerank_skipped" not in plain and [h["id"] for h in plain["hits"]] == [h["id"] for h in body["hits"]]


def test_photo_search_multipart_and_base64_find_the_product(http: httpx.Client, myntra_slice: Path) -> None:
    p = _first_product(myntra_slice)
    data = (myntra_slice / p["images"][0]).read_bytes()
    r = http.post("/v1/search", files={"image": ("x.jpg", data, "image/jpeg")}, data={"k": "3"})
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["id"] == p["id"] and r.json()["hits"][0]["matched"] == "image"
    r = http.post("/v1/search", json={"image_base64": base64.b64encode(data).decode(), "k": 3})
    assert r.json()["hits"][0]["id"] == p["id"]


def test_product_image_and_similar(http: httpx.Client, myntra_slice: Path) -> None:
    p = _first_product(myntra_slice)
    prod = http.get(f"/v1/products/{p['id']}").json()
    assert prod["title"] == p["title"] and prod["image_urls"]
    img = http.get(prod["image_urls"][0])
    assert img.status_code == 200 and img.content[:2] == b"\xff\xd8"
    sim = http.get(f"/v1/products/{p['id']}/similar", params={"k": 5}).json()
    assert len(sim["hits"]) == 5 and p["id"] not in [h["id"] for h in sim["hits"]]
    assert http.get("/v1/products/nope-404").status_code == 404
    assert http.get("/v1/products/nope-404").json()["error"]["code"] == "not_found"
    assert http.get(f"/v1/products/{p['id']}/images/7").status_code == 404


def test_similar_over_http_takes_filters_and_returns_facets(http: httpx.Client, myntra_slice: Path) -> None:
    pid = _first_product(myntra_slice)["id"]
    plain = http.get(f"/v1/products/{pid}/similar", params={"k": 10}).json()
    colours = plain["facets"]["colour"]
    assert sum(colours.values()) > len(plain["hits"])  # counted over the candidate pool, not the page
    # the least frequent colour: a filter that must change the page
    colour = list(colours)[-1]
    r = http.get(f"/v1/products/{pid}/similar", params={"k": 10, "filters": json.dumps({"colour": [colour]})})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"] and set(body["facets"]["colour"]) == {colour}
    for h in body["hits"]:
        assert http.get(f"/v1/products/{h['id']}").json()["attributes"]["colour"] == colour
    # the filters are part of the cursor's query: a page of the unfiltered query does not continue it
    if body["next_cursor"]:
        other = http.get(f"/v1/products/{pid}/similar", params={"k": 10, "cursor": body["next_cursor"]})
        assert other.status_code == 400 and other.json()["error"]["code"] == "invalid_cursor"
    bad = http.get(f"/v1/products/{pid}/similar", params={"filters": "{colour"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_filter"


@pytest.mark.parametrize("name", sorted(bad_images()))
def test_bad_photos_get_400_with_a_reason_and_change_nothing(http: httpx.Client, indexed_suite: Any, name: str) -> None:
    before = indexed_suite.gateway.core.index.count()
    r = http.post("/v1/search", files={"image": (f"{name}.jpg", bad_images()[name], "image/jpeg")})
    assert r.status_code in (400, 413), r.text
    err = r.json()["error"]
    assert err["code"] and err["message"]
    assert indexed_suite.gateway.core.index.count() == before


@pytest.mark.parametrize("name", sorted(odd_images()))
def test_odd_but_valid_photos_are_searched(http: httpx.Client, name: str) -> None:
    r = http.post("/v1/search", files={"image": (f"{name}.img", odd_images()[name])}, data={"k": "3"})
    assert r.status_code == 200, r.text
    assert len(r.json()["hits"]) == 3


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {"text": ""}}, 400, "empty_query"),
        ({"json": {"text": "   \n "}}, 400, "empty_query"),
        ({"json": {"text": "dress " * 20_000}}, 400, "query_too_long"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"json": ["a list"]}, 400, "invalid_json"),
        ({"json": {"text": "dress", "k": -1}}, 400, "invalid_k"),
        ({"json": {"text": "dress", "k": 100000}}, 400, "invalid_k"),
        ({"json": {"text": "dress", "k": "ten"}}, 400, "invalid_k"),
        ({"json": {"text": 42}}, 400, "invalid_query"),
        ({"json": {"k": 3}}, 400, "empty_query"),
        ({"json": {"text": "dress", "filters": {"colour; DROP TABLE": "x"}}}, 400, "invalid_filter"),
        ({"json": {"text": "dress", "rerank": "perhaps"}}, 400, "invalid_rerank"),
        ({"json": {"image_base64": "!!!not base64!!!"}}, 400, "invalid_base64"),
        ({"content": b"text=dress", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
    ],
)
def test_bad_requests(http: httpx.Client, kwargs: dict[str, Any], status: int, code: str) -> None:
    r = http.post("/v1/search", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_grpc_search_service(grpc_stub: search_pb2_grpc.SearchServiceStub, myntra_slice: Path) -> None:
    p = _first_product(myntra_slice)
    r = grpc_stub.SearchText(search_pb2.SearchTextRequest(text="black shoes", options=search_pb2.SearchOptions(k=4)))
    assert len(r.hits) == 4 and r.took_ms > 0
    data = (myntra_slice / p["images"][0]).read_bytes()
    r = grpc_stub.SearchImage(search_pb2.SearchImageRequest(image=types_pb2.Media(data=data)))
    assert r.hits[0].id == p["id"]
    with pytest.raises(grpc.RpcError) as e:
        grpc_stub.SearchImage(search_pb2.SearchImageRequest(image=types_pb2.Media(data=b"not an image")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unsupported" in (e.value.details() or "")
    with pytest.raises(grpc.RpcError) as e:
        grpc_stub.GetProduct(search_pb2.GetProductRequest(id="missing-id"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        grpc_stub.SearchText(search_pb2.SearchTextRequest(text=""))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ids = [json.loads(line)["id"] for line in (myntra_slice / "products.jsonl").read_text().splitlines()[:3]]
    sim = grpc_stub.Similar(search_pb2.SimilarRequest(product_ids=ids, options=search_pb2.SearchOptions(k=3)))
    assert len(sim.results) == 3 and all(len(x.hits) == 3 for x in sim.results)
    got = grpc_stub.GetProduct(search_pb2.GetProductRequest(id=p["id"]))
    assert got.title == p["title"] and got.attributes["colour"] == p["attributes"]["colour"]


def test_reingest_changes_nothing(indexed_suite: Any, myntra_slice: Path) -> None:
    from prism.catalog import Catalog

    before = indexed_suite.gateway.core.index.count()
    report = indexed_suite.ingest(Catalog.open(myntra_slice), show_progress=False)
    assert report.indexed == 0 and report.unchanged == before and not report.failed
    assert indexed_suite.gateway.core.index.count() == before


def test_health_metrics_and_page(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").status_code == 200
    metrics = http.get("/metrics").text
    assert 'prism_rpc_requests_total{code="OK",method="Embed",service="text-encoder"}' in metrics
    assert "prism_items_total" in metrics and "prism_http_latency_seconds" in metrics
    page = http.get("/")
    assert page.status_code == 200 and '<input id="q"' in page.text
    assert http.post("/v1/search", json={"text": "x"}).headers["x-request-id"]
