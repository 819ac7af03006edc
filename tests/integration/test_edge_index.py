"""EdgeProductIndex (Qdrant Edge, HNSW) against exact numpy search and against ProductIndex."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prism.bench_ann import Generator, exact_topk
from prism.edge_index import EdgeProductIndex, EdgeTuning
from prism.errors import InvalidInput, NotFound
from prism.index import IndexSettings, ProductIndex, build_filter, open_index
from prism.lexical import SparseTerms

pytestmark = pytest.mark.integration

N, DIM, K = 3000, 32, 10
COLOURS = ("Blue", "Red", "Green", "Black")
# Tiny thresholds so that a few thousand 32-d points get a real HNSW graph (the defaults leave
# segments under ~6.7k 384-d vectors to exact search), and no auto-build: tests call optimize().
TUNING = EdgeTuning(indexing_threshold_kb=10, full_scan_threshold_kb=10, auto_optimize_points=0)


def _settings(path: Path) -> IndexSettings:
    return IndexSettings(collection="t", path=path, engine="edge")


def _payload(i: int) -> dict[str, object]:
    return {"title": f"P{i}", "attributes": {"colour": COLOURS[i % 4]}, "price": float(i % 100)}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    gen = Generator(DIM, clusters=40, seed=3)
    vectors, _ = gen.chunk(N, 0)
    queries, _ = gen.chunk(50, -1)
    return vectors, queries


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, data: tuple[np.ndarray, np.ndarray]) -> Iterator[EdgeProductIndex]:
    vectors, _ = data
    index = EdgeProductIndex.open(_settings(tmp_path_factory.mktemp("edge")), TUNING)
    assert index.ensure_collection({"v": DIM}) is True
    for start in range(0, N, 1000):
        index.upsert([(f"p{i}", {"v": vectors[i]}, _payload(i)) for i in range(start, start + 1000)])
    assert index.indexed_count() == 0
    assert index.optimize() is True
    assert index.indexed_count() >= N  # the graph covers every point
    yield index
    index.close()


def _ids(rows: np.ndarray) -> list[set[str]]:
    return [{f"p{i}" for i in row} for row in rows]


def test_ann_matches_exact_top10(built: EdgeProductIndex, data: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, queries = data
    truth = _ids(exact_topk(vectors, queries, K))
    recalls = []
    for q, want in zip(queries, truth, strict=True):
        hits = built.search("v", q, limit=K, with_payload=["product_id"])
        assert len(hits) == K and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        recalls.append(len({h.product_id for h in hits} & want) / K)
    assert np.mean(recalls) >= 0.95
    page2 = built.search("v", queries[0], limit=K, offset=K)
    first = built.search("v", queries[0], limit=2 * K)
    assert [h.product_id for h in page2] == [h.product_id for h in first[K:]]


def test_filters_on_keywords_and_price(built: EdgeProductIndex, data: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, queries = data
    colour = np.array([i % 4 for i in range(N)])
    price = np.array([float(i % 100) for i in range(N)])
    allowed = np.flatnonzero(np.isin(colour, [0, 1]) & (price >= 10) & (price <= 60))
    flt = build_filter({"colour": ["Blue", "Red"]}, price_min=10, price_max=60)
    truth = _ids(allowed[exact_topk(vectors[allowed], queries, K)])
    recalls = []
    for q, want in zip(queries, truth, strict=True):
        hits = built.search("v", q, limit=K, query_filter=flt)
        for h in hits:
            assert h.payload["attributes"]["colour"] in ("Blue", "Red") and 10 <= h.payload["price"] <= 60
        recalls.append(len({h.product_id for h in hits} & want) / K)
    assert np.mean(recalls) >= 0.95
    not_blue = build_filter(exclude_ids=["p0"], must_not_match={"colour": "Blue"})
    hits = built.search("v", vectors[0], limit=K, query_filter=not_blue)
    assert hits and all(h.payload["attributes"]["colour"] != "Blue" and h.product_id != "p0" for h in hits)
    assert len(built.scroll_ids(build_filter({"colour": ["Green"]}))) == N // 4


def test_query_by_id(built: EdgeProductIndex, data: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, _ = data
    hits = built.search("v", "p7", limit=K, with_payload=["product_id"])
    truth = exact_topk(vectors, vectors[7:8], K + 1)[0]
    want = {f"p{i}" for i in truth if i != 7}
    got = {h.product_id for h in hits}
    assert "p7" not in got  # like ProductIndex: the product itself is left out
    assert len(got & want) >= 9
    reds = built.search("v", "p7", limit=K, query_filter=build_filter({"colour": ["Red"]}))
    assert reds and all(h.payload["attributes"]["colour"] == "Red" for h in reds)


def test_bad_input(built: EdgeProductIndex) -> None:
    with pytest.raises(NotFound):
        built.search("v", "no-such-product", limit=5)
    with pytest.raises(NotFound):
        built.get("no-such-product")
    with pytest.raises(InvalidInput):
        built.search("v", np.ones(DIM + 1, dtype=np.float32), limit=5)
    with pytest.raises(InvalidInput):
        built.search("nope", np.ones(DIM, dtype=np.float32), limit=5)
    with pytest.raises(InvalidInput):
        built.upsert([("bad", {"v": np.ones(3, dtype=np.float32)}, {})])
    with pytest.raises(InvalidInput):
        built.upsert([("bad", {"v": np.full(DIM, np.nan, dtype=np.float32)}, {})])
    assert built.payloads(["bad"]) == {}


def test_upsert_count_payloads_delete_and_reload(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, queries = data
    n = 500
    index = EdgeProductIndex.open(_settings(tmp_path), TUNING)
    assert index.count() == 0 and index.search("v", queries[0], limit=3) == []
    index.ensure_collection({"v": DIM})
    items = [(f"p{i}", {"v": vectors[i]}, _payload(i)) for i in range(n)]
    index.upsert(items)
    index.upsert(items[:10])  # idempotent: one point per product
    assert index.count() == n
    assert index.payloads(["p1", "p2", "zzz"], fields=["title"]) == {"p1": {"title": "P1"}, "p2": {"title": "P2"}}
    assert index.get("p3")["attributes"] == {"colour": "Black"}
    index.delete(["p1", "p2"])
    assert index.count() == n - 2 and "p1" not in index.payloads(["p1"])
    assert sorted(index.scroll_ids()) == sorted(f"p{i}" for i in range(n) if i not in (1, 2))
    index.optimize()
    before = [h.product_id for h in index.search("v", queries[0], limit=K)]
    index.close()

    again = EdgeProductIndex.open(_settings(tmp_path), TUNING)
    assert again.ensure_collection({"v": DIM}) is False
    with pytest.raises(RuntimeError, match="vectors"):
        again.ensure_collection({"v": DIM + 1})
    assert again.count() == n - 2 and again.get("p3")["title"] == "P3"
    assert [h.product_id for h in again.search("v", queries[0], limit=K)] == before
    again.close()


def test_auto_optimize_builds_the_graph(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, _ = data
    tuning = EdgeTuning(indexing_threshold_kb=10, full_scan_threshold_kb=10, auto_optimize_points=1000)
    index = EdgeProductIndex.open(_settings(tmp_path), tuning)
    index.ensure_collection({"v": DIM})
    index.upsert([(f"p{i}", {"v": vectors[i]}, {}) for i in range(900)])
    assert index.indexed_count() == 0  # below the threshold: searched exactly, not built yet
    index.upsert([(f"p{i}", {"v": vectors[i]}, {}) for i in range(900, 1200)])
    assert index.indexed_count() >= 1200
    index.close()


def _vec(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_same_answers_as_product_index_with_sparse_and_multivector(tmp_path: Path) -> None:
    """The gateway's layout (dense text/image, image views by MaxSim, BM25 sparse) on both engines."""
    items: list[tuple[str, dict[str, np.ndarray | SparseTerms], dict[str, Any]]] = [
        (
            "a",
            {
                "text": _vec(1, 0, 0, 0),
                "image": _vec(1, 0, 0),
                "image_views": np.stack([_vec(1, 0, 0), _vec(1, 0.2, 0)]),
                "lexical": SparseTerms((1, 5), (1.0, 2.0)),
            },
            {"title": "A", "attributes": {"colour": "Blue"}, "price": 5.0},
        ),
        (
            "b",
            {
                "text": _vec(1, 0.1, 0, 0),
                "image": _vec(1, 0.1, 0),
                "image_views": np.stack([_vec(0, 1, 0), _vec(1, 0.1, 0)]),
                "lexical": SparseTerms((5, 9), (1.0, 1.0)),
            },
            {"title": "B", "attributes": {"colour": "Red"}, "price": 50.0},
        ),
        (
            "c",
            {
                "text": _vec(0, 0, 1, 0),
                "image": _vec(0, 0, 1),
                "image_views": np.stack([_vec(0, 0, 1)]),
                "lexical": SparseTerms((9,), (3.0,)),
            },
            {"title": "C", "attributes": {"colour": "Blue"}, "price": 9.0},
        ),
    ]
    dense = {"text": 4, "image": 3, "image_views": 3}
    local = ProductIndex.open(IndexSettings(collection="t"))
    edge = open_index(IndexSettings(collection="t", path=tmp_path, engine="edge"))
    assert isinstance(edge, EdgeProductIndex)
    for index in (local, edge):
        index.ensure_collection(dense, multivector={"image_views"}, sparse={"lexical"})
        index.upsert(items)

    def answers(index: ProductIndex | EdgeProductIndex) -> list[list[tuple[str, float]]]:
        queries = [
            index.search("text", _vec(1, 0, 0, 0), limit=3),
            index.search("text", _vec(1, 0, 0, 0), limit=3, query_filter=build_filter({"colour": ["Blue"]})),
            index.search("text", _vec(1, 0, 0, 0), limit=3, query_filter=build_filter(price_max=10)),
            index.search("image", "a", limit=2),
            index.search("lexical", SparseTerms((5, 9), (1.0, 0.3)), limit=3),
            index.search("image", np.stack([_vec(1, 0, 0), _vec(0, 1, 0)]), limit=3, candidates=10),
        ]
        return [[(h.product_id, round(h.score, 4)) for h in hits] for hits in queries]

    assert answers(edge) == answers(local)
    stored = edge.vectors(["a", "zzz"], ["text", "image_views"])
    assert list(stored) == ["a"] and stored["a"]["image_views"].shape == (2, 3)
    np.testing.assert_allclose(stored["a"]["text"], local.vectors(["a"], ["text"])["a"]["text"], atol=1e-6)
    assert edge.search("lexical", SparseTerms((), ()), limit=3) == []
    local.close()
    edge.close()


def test_open_index_selects_the_engine(tmp_path: Path) -> None:
    assert isinstance(open_index(IndexSettings(collection="t")), ProductIndex)
    edge = open_index(IndexSettings(collection="t", engine="edge"))  # no path: a temporary folder
    assert isinstance(edge, EdgeProductIndex)
    folder = edge.folder
    edge.close()
    assert not folder.exists()
    with pytest.raises(ValueError, match="engine"):
        open_index(IndexSettings(collection="t", engine="faiss"))
    with pytest.raises(ValueError, match="server"):
        EdgeProductIndex(IndexSettings(url="http://localhost:6333", engine="edge"))
