import numpy as np
import pytest

from prism.errors import InvalidInput, NotFound
from prism.index import IndexSettings, ProductIndex, build_filter, point_id

pytestmark = pytest.mark.integration


def _index() -> ProductIndex:
    idx = ProductIndex.open(IndexSettings(collection="t"))
    idx.ensure_collection({"text": 4, "image": 3})
    return idx


def _vec(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_upsert_is_idempotent_and_one_point_per_product() -> None:
    idx = _index()
    items = [
        ("a", {"text": _vec(1, 0, 0, 0), "image": _vec(1, 0, 0)}, {"title": "A", "attributes": {"colour": "Blue"}}),
        ("b", {"text": _vec(0, 1, 0, 0)}, {"title": "B", "attributes": {"colour": "Red"}}),
    ]
    idx.upsert(items)
    idx.upsert(items)
    assert idx.count() == 2
    assert point_id("a") == point_id("a") != point_id("b")
    assert idx.get("a")["title"] == "A"
    with pytest.raises(NotFound):
        idx.get("zzz")


def test_search_filters_and_query_by_id() -> None:
    idx = _index()
    idx.upsert(
        [
            (
                "a",
                {"text": _vec(1, 0, 0, 0), "image": _vec(1, 0, 0)},
                {"title": "A", "attributes": {"colour": "Blue"}, "price": 5.0},
            ),
            (
                "b",
                {"text": _vec(1, 0.1, 0, 0), "image": _vec(1, 0.1, 0)},
                {"title": "B", "attributes": {"colour": "Red"}, "price": 50.0},
            ),
            (
                "c",
                {"text": _vec(0, 0, 1, 0), "image": _vec(0, 0, 1)},
                {"title": "C", "attributes": {"colour": "Blue"}, "price": 9.0},
            ),
        ]
    )
    hits = idx.search("text", _vec(1, 0, 0, 0), limit=3)
    assert [h.product_id for h in hits][:2] == ["a", "b"]
    blue = idx.search("text", _vec(1, 0, 0, 0), limit=3, query_filter=build_filter({"colour": ["Blue"]}))
    assert {h.product_id for h in blue} == {"a", "c"}
    cheap = idx.search("text", _vec(1, 0, 0, 0), limit=3, query_filter=build_filter(price_max=10))
    assert {h.product_id for h in cheap} == {"a", "c"}
    like_a = idx.search("image", "a", limit=2)
    assert like_a[0].product_id == "b" and "a" not in [h.product_id for h in like_a]


def test_mismatched_vectors_are_refused_and_bad_filter_fields_rejected() -> None:
    idx = _index()
    with pytest.raises(RuntimeError, match="vectors"):
        idx.ensure_collection({"text": 8})
    for bad in ["colour; drop", "a.b", "", "x" * 100, "$where"]:
        with pytest.raises(InvalidInput):
            build_filter({bad: ["x"]})


def test_collection_is_created_with_the_configured_shards_and_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards, replicas and write consistency reach ``create_collection`` (local mode accepts and ignores them)."""
    settings = IndexSettings(collection="sharded", shard_number=6, replication_factor=2, write_consistency_factor=2)
    idx = ProductIndex.open(settings)
    client = idx.client._client  # the QdrantClient behind the embedded-mode lock
    calls: list[dict[str, object]] = []
    create = client.create_collection

    def recording(*args: object, **kwargs: object) -> bool:
        calls.append(kwargs)
        return bool(create(*args, **kwargs))

    monkeypatch.setattr(client, "create_collection", recording)
    assert idx.ensure_collection({"text": 4}) is True
    (kwargs,) = calls
    assert (kwargs["shard_number"], kwargs["replication_factor"], kwargs["write_consistency_factor"]) == (6, 2, 2)
    idx.upsert([("a", {"text": _vec(1, 0, 0, 0)}, {"title": "A"})])
    assert idx.count() == 1
    # Unset: nothing is passed and the server chooses (auto sharding, one copy).
    plain = ProductIndex.open(IndexSettings(collection="plain"))
    client = plain.client._client
    calls.clear()
    create = client.create_collection
    monkeypatch.setattr(client, "create_collection", recording)
    plain.ensure_collection({"text": 4})
    assert not {"shard_number", "replication_factor", "write_consistency_factor"} & set(calls[0])
