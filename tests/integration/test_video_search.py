"""Video in the embedded suite: search by a clip (HTTP and gRPC), bad clips refused, product videos
indexed through the pipeline, the two real phone videos searchable."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import av
import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from prism.catalog import Catalog
from prism.gen.common.v1 import types_pb2
from prism.gen.search.v1 import search_pb2, search_pb2_grpc
from prism.training.clips import synthesize_clip

pytestmark = pytest.mark.integration


def mp4_of(frames: list[Image.Image], fps: int = 12) -> bytes:
    buf = io.BytesIO()
    w, h = frames[0].size
    w, h = w - w % 2, h - h % 2
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = 4
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.asarray(f.convert("RGB").resize((w, h))), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


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
