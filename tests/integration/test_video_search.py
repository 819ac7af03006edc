"""Video in the embedded suite: search by a clip (HTTP and gRPC), bad clips refused, product videos
indexed through the pipeline, the two real phone videos searchable."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from prism.catalog import Catalog
from prism.gen.common.v1 import types_pb2
from prism.gen.search.v1 import search_pb2, search_pb2_grpc
from prism.training.clips import synthesize_clip
from tests.media_samples import mp4_of, video_catalog

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(indexed_suite: object) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=indexed_suite.url, timeout=120) as c:  # type: ignore[attr-defined]
        yield c


def test_a_clip_of_a_product_finds_it(client: httpx.Client, myntra_slice: Path) -> None:
    products = list(Catalog.open(myntra_slice).products())
    rng = np.random.default_rng(7)
    found = 0
    picked = products[:: len(products) // 8][:8]
    for p in picked:
        with Image.open(Catalog.open(myntra_slice).media_path(p.images[0])) as im:
            clip = mp4_of(synthesize_clip(im.convert("RGB"), rng, frames=16))
        r = client.post("/v1/search", files={"video": ("clip.mp4", clip, "video/mp4")}, data={"k": "10"})
        assert r.status_code == 200, r.text
        found += p.id in [h["id"] for h in r.json()["hits"]]
    assert found >= 6, found  # Recall@10 of clips of catalog photos


def test_video_base64_and_grpc(client: httpx.Client, indexed_suite: object, myntra_slice: Path) -> None:
    import base64

    catalog = Catalog.open(myntra_slice)
    p = next(iter(catalog.products()))
    with Image.open(catalog.media_path(p.images[0])) as im:
        clip = mp4_of(synthesize_clip(im.convert("RGB"), np.random.default_rng(1)))
    r = client.post("/v1/search", json={"video_base64": base64.b64encode(clip).decode(), "k": 5})
    assert r.status_code == 200, r.text
    http_ids = [h["id"] for h in r.json()["hits"]]
    address = indexed_suite.gateway.grpc.address  # type: ignore[attr-defined]
    with grpc.insecure_channel(address) as ch:
        stub = search_pb2_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        resp = stub.SearchVideo(
            search_pb2.SearchVideoRequest(video=types_pb2.Media(data=clip), options=search_pb2.SearchOptions(k=5)),
            timeout=60,
        )
        assert [h.id for h in resp.hits] == http_ids
        with pytest.raises(grpc.RpcError) as err:
            stub.SearchVideo(search_pb2.SearchVideoRequest(video=types_pb2.Media(data=b"not a video")), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_clips_are_refused_with_a_reason(client: httpx.Client) -> None:
    gif = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(gif, format="GIF")
    cases = {
        "text.mp4": (b"hello, I am not a video\n" * 10, "invalid_video"),
        "anim.gif": (gif.getvalue(), "unsupported_container"),
        "empty.mp4": (b"", "empty_video"),
    }
    for name, (data, code) in cases.items():
        r = client.post("/v1/search", files={"video": (name, data, "video/mp4")}, data={"k": "5"})
        assert r.status_code == 400, (name, r.text)
        assert r.json()["error"]["code"] == code, (name, r.json())


def test_the_real_phone_videos_decode_and_search(client: httpx.Client, shared_data: Path) -> None:
    for name in ("reel-a.mp4", "reel-b.mp4"):
        data = (shared_data / "videos" / name).read_bytes()
        r = client.post("/v1/search", files={"video": (name, data, "video/mp4")}, data={"k": "5"})
        assert r.status_code == 200, (name, r.text)
        assert len(r.json()["hits"]) == 5


def test_products_with_videos_are_indexed_and_found_by_their_video(
    common_settings: object, myntra_slice: Path, tmp_path: Path
) -> None:
    """A catalog whose products carry videos: the pipeline encodes them ("video" vector), and a
    clip query matches through them even for a product without photos."""
    from prism.embedded import start_suite

    src = Catalog.open(myntra_slice)
    products = list(src.products())[:12]
    (tmp_path / "videos").mkdir()
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(3)
    lines = []
    for i, p in enumerate(products):
        with Image.open(src.media_path(p.images[0])) as im:
            photo = im.convert("RGB")
        clip = mp4_of(synthesize_clip(photo, rng))
        (tmp_path / "videos" / f"{p.id}.mp4").write_bytes(clip)
        rec = json.loads(json.dumps(p.to_record()))
        rec["videos"] = [f"videos/{p.id}.mp4"]
        if i == 0:  # video only: no photo
            rec["images"] = []
        else:
            photo.save(tmp_path / "images" / f"{p.id}.jpg")
            rec["images"] = [f"images/{p.id}.jpg"]
        lines.append(json.dumps(rec))
    (tmp_path / "products.jsonl").write_text("\n".join(lines) + "\n")
    with start_suite(common=common_settings, index_path=None, http_port=0) as suite:  # type: ignore[arg-type]
        report = suite.ingest(Catalog.open(tmp_path), show_progress=False)
        assert report.indexed == len(products), report.summary()
        vecs = suite.gateway.core.index.vectors([p.id for p in products], ["video"])
        assert set(vecs) == {p.id for p in products}
        with Image.open(src.media_path(products[0].images[0])) as im:
            query = mp4_of(synthesize_clip(im.convert("RGB"), np.random.default_rng(99)))
        with httpx.Client(base_url=suite.url, timeout=120) as c:
            r = c.post("/v1/search", files={"video": ("q.mp4", query, "video/mp4")}, data={"k": "3"})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert hits[0]["id"] == products[0].id and hits[0]["matched"] == "video", hits


def test_product_videos_go_through_the_celery_tasks(
    common_settings: object, myntra_slice: Path, shared_data: Path, tmp_path: Path
) -> None:
    """``prism ingest``'s event path in-process: the uploader puts the videos in a folder store, S3
    events reach the Celery tasks (in-memory transport, a real worker thread), which fetch the
    videos from the store and have the video encoder encode them over gRPC into the index."""
    from prism.embedded import start_suite
    from prism.storage import FolderStore
    from prism.vectors import normalized_mean

    src = Catalog.open(myntra_slice)
    products = list(src.products())[:6]
    cat = tmp_path / "catalog"
    reel = (shared_data / "videos" / "reel-a.mp4").read_bytes()
    ids = video_catalog(products, src, cat, reel, seed=4)
    store_root = tmp_path / "store"
    with start_suite(common=common_settings, index_path=None, http_port=0) as suite:  # type: ignore[arg-type]
        report = suite.submit(Catalog.open(cat), store_root=store_root, show_progress=False)
        s = report.summary()
        assert s["indexed"] == len(products) and s["failed"] == 0 and s["missing"] == 0, s
        # every outcome came from the worker's tasks (the run's outcome queue), one per product
        assert set(report.outcomes) == set(ids) and {o["outcome"] for o in report.outcomes.values()} == {"indexed"}
        # the uploader carried the videos: the record in the store points at the video's own key
        store = FolderStore(store_root)
        first = json.loads(store.get(f"products/{ids[0]}.json", 2**20))
        assert first["videos"] == [f"media/{ids[0]}/{ids[0]}.mp4"] and first["images"] == []
        assert store.get(first["videos"][0], 2**26) == reel
        got = suite.gateway.core.index.vectors(ids, ["video", "image"])
        assert set(got) == set(ids)
        assert set(got[ids[0]]) == {"video"}, "the video-only product is indexed by its video"
        assert all(set(got[pid]) == {"video", "image"} for pid in ids[1:]), {p: set(v) for p, v in got.items()}
        # and it is that video's vector: the video encoder's pooled vector of the same bytes
        video = suite.gateway.core.video
        assert video is not None
        [enc] = video.embed_media_encoded([reel], timeout=120, ephemeral=True)
        assert not isinstance(enc, Exception), enc
        want = normalized_mean(enc.native.reshape(-1, enc.native.shape[-1]))
        stored = got[ids[0]]["video"].reshape(-1)
        assert float(stored @ want / np.linalg.norm(stored)) > 0.999
        # a shopper's search with the same real video finds the product through its video
        with httpx.Client(base_url=suite.url, timeout=120) as c:
            r = c.post("/v1/search", files={"video": ("reel-a.mp4", reel, "video/mp4")}, data={"k": "3"})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert hits[0]["id"] == ids[0] and hits[0]["matched"] == "video", hits
        # a second run changes nothing: the media fingerprint covers the videos too
        again = suite.submit(Catalog.open(cat), store_root=store_root, show_progress=False).summary()
        assert again["unchanged"] == len(products) and again["indexed"] == 0, again
