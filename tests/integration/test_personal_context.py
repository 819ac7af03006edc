"""Personal context: recently viewed products bias a search toward products like them."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration


def _search(url: str, body: dict[str, object]) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as c:
        return c.post("/v1/search", json={"k": 20, "facets": [], **body})


def test_viewed_products_pull_similar_ones_up_without_replacing_the_query(indexed_suite: object) -> None:
    url = indexed_suite.url  # type: ignore[attr-defined]
    core = indexed_suite.gateway.core  # type: ignore[attr-defined]
    plain = [h["id"] for h in _search(url, {"text": "men shirts", "k": 40}).json()["hits"]]
    viewed = plain[25:27]  # two products the plain ranking puts low
    biased = [h["id"] for h in _search(url, {"text": "men shirts", "k": 40, "viewed": viewed}).json()["hits"]]
    assert len(biased) == 40 and not set(viewed) & set(biased)  # recommend-style: not offered again
    # products most like the viewed ones (what the context list searches) move up
    using = next(n for n in ("shared", "image", "text") if n in core.index.dense_names())
    like = [s.product_id for s in core.index.search(using, viewed[0], limit=60)]
    near = [p for p in like if p in plain and p not in viewed][:5]
    assert near

    def mean_rank(ranking: list[str]) -> float:
        return float(sum(ranking.index(p) if p in ranking else len(ranking) for p in near)) / len(near)

    assert mean_rank(biased) < mean_rank(plain), (mean_rank(plain), mean_rank(biased))
    # the query still leads: most of the plain top 10 stay in the biased top 20
    assert len(set(plain[:10]) & set(biased[:20])) >= 5


def test_context_is_validated_and_unknown_ids_are_ignored(indexed_suite: object) -> None:
    url = indexed_suite.url  # type: ignore[attr-defined]
    for bad in ("10007", ["../etc"], [f"p{i}" for i in range(21)], [1, 2]):
        r = _search(url, {"text": "shirt", "viewed": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_context", (bad, r.text)
    plain = _search(url, {"text": "shirt"}).json()["hits"]
    r = _search(url, {"text": "shirt", "viewed": ["no-such-product"]})
    assert r.status_code == 200 and r.json()["hits"] == plain
    # the cursor is bound to the context too
    first = _search(url, {"text": "shirt", "k": 5}).json()
    r = _search(url, {"text": "shirt", "k": 5, "cursor": first["next_cursor"], "viewed": [plain[0]["id"]]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor"


def test_query_photos_and_videos_leave_nothing_behind(indexed_suite: object) -> None:
    """A shopper's photo or clip is not cached by the encoders (the vector cache does not grow),
    while a catalog photo embedded for indexing is."""
    import io

    import numpy as np
    from PIL import Image

    servicers = indexed_suite.servicers  # type: ignore[attr-defined]
    caches = {name: servicers[name]._cache for name in ("image-encoder", "video-encoder")}
    assert all(c is not None for c in caches.values())
    before = {name: len(c) for name, c in caches.items()}
    rng = np.random.default_rng(5)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(80, 60, 3), dtype=np.uint8)).save(buf, format="PNG")
    with httpx.Client(base_url=indexed_suite.url, timeout=60) as c:  # type: ignore[attr-defined]
        r = c.post("/v1/search", files={"image": ("me.png", buf.getvalue(), "image/png")}, data={"k": "3"})
        assert r.status_code == 200, r.text
    assert {name: len(c) for name, c in caches.items()} == before
    # the same encoder still caches what ingestion sends
    indexed_suite.gateway.core.image.embed_media([buf.getvalue()])  # type: ignore[attr-defined]
    assert len(caches["image-encoder"]) == before["image-encoder"] + 1
