"""Query photos and videos through the real gateway (HTTP multipart and base64, gRPC): by default
logged as size, type and hash and stored nowhere; kept by hash only when the setting asks."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from prism.catalog import Catalog
from prism.gen.common.v1 import types_pb2
from prism.gen.search.v1 import search_pb2, search_pb2_grpc
from prism.training.clips import synthesize_clip
from services.gateway.retention import QueryMedia
from services.gateway.settings import Settings
from tests.conftest import REPO
from tests.integration.test_video_search import mp4_of

pytestmark = pytest.mark.integration

Logs = list[MutableMapping[str, Any]]


@pytest.fixture(scope="module")
def http(indexed_suite: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=indexed_suite.url, timeout=120) as c:
        yield c


def unique_photo(catalog_dir: Path, seed: int) -> bytes:
    """A real catalog photo with a random patch: bytes no other file on this machine holds."""
    rng = np.random.default_rng(seed)
    catalog = Catalog.open(catalog_dir)
    product = list(catalog.products())[seed % 50]
    with Image.open(catalog.media_path(product.images[0])) as im:
        img = im.convert("RGB")
    img.paste(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)), (0, 0))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def unique_clip(catalog_dir: Path, seed: int) -> bytes:
    catalog = Catalog.open(catalog_dir)
    with Image.open(catalog.media_path(next(iter(catalog.products())).images[0])) as im:
        return mp4_of(synthesize_clip(im.convert("RGB"), np.random.default_rng(seed), frames=8))


def files_holding(needle: bytes, roots: list[Path], since: float) -> list[Path]:
    """Files under ``roots`` written since ``since`` whose content holds ``needle``."""
    found = []
    for root in roots:
        for dirpath, _, names in os.walk(root, onerror=lambda _: None):
            for name in names:
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                    if st.st_mtime < since or st.st_size > 512 * 2**20 or not path.is_file():
                        continue
                    if needle in path.read_bytes():
                        found.append(path)
                except OSError:  # others' files, vanished temporaries
                    continue
    return found


def search_every_way(http: httpx.Client, suite: Any, photo: bytes, clip: bytes) -> None:
    r = http.post("/v1/search", files={"image": ("q.jpg", photo, "image/jpeg")}, data={"k": "5"})
    assert r.status_code == 200, r.text
    r = http.post("/v1/search", json={"image_base64": base64.b64encode(photo).decode(), "k": 5})
    assert r.status_code == 200, r.text
    r = http.post("/v1/search", files={"video": ("q.mp4", clip, "video/mp4")}, data={"k": "5"})
    assert r.status_code == 200, r.text
    with grpc.insecure_channel(suite.gateway.grpc.address) as ch:
        stub = search_pb2_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        stub.SearchImage(search_pb2.SearchImageRequest(image=types_pb2.Media(data=photo)), timeout=60)


def test_by_default_query_media_are_logged_as_size_type_hash_and_stored_nowhere(
    http: httpx.Client, indexed_suite: Any, myntra_slice: Path, common_settings: Any, logs: Logs
) -> None:
    core = indexed_suite.gateway.core
    assert core.query_media.retain_dir is None
    photo, clip = unique_photo(myntra_slice, 1), unique_clip(myntra_slice, 1)
    since = time.time() - 1
    search_every_way(http, indexed_suite, photo, clip)
    events = [e for e in logs if e["event"] == "gateway.query_media"]
    expect = {
        ("image", len(photo), "image/jpeg", hashlib.sha256(photo).hexdigest()),
        ("video", len(clip), "video/mp4", hashlib.sha256(clip).hexdigest()),
    }
    assert {(e["kind"], e["bytes"], e["type"], e["sha256"]) for e in events} == expect
    assert len(events) == 4  # multipart, base64, video, gRPC
    # The bytes in no form in any event (raw, repr, hex, base64 of a slice), of any level.
    for data in (photo, clip):
        chunk = data[len(data) // 2 : len(data) // 2 + 24]
        text = repr(list(logs))
        assert repr(chunk)[2:-1] not in text and chunk.hex() not in text
        assert base64.b64encode(chunk).decode()[:24] not in text
    assert not any(isinstance(v, (bytes, bytearray)) for e in logs for v in e.values())
    # Nothing written that holds them: the suite's var and cache folders, the checkout, the temp dir.
    roots = [common_settings.var_dir, common_settings.cache_dir, REPO / "var", Path(tempfile.gettempdir())]
    for data in (photo, clip):
        needle = data[len(data) // 3 : len(data) // 3 + 64]
        assert files_holding(needle, roots, since) == []
    assert core.query_media._thread is None  # no retention writer was ever started


def test_retention_setting_keeps_each_query_by_hash_within_the_limits(
    http: httpx.Client, indexed_suite: Any, myntra_slice: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = tmp_path / "kept"
    monkeypatch.setenv("PRISM_GATEWAY_RETAIN_QUERY_MEDIA_DIR", str(kept))
    monkeypatch.setenv("PRISM_GATEWAY_RETAIN_QUERY_MEDIA_MAX_FILES", "3")
    retention = QueryMedia.from_settings(Settings())
    monkeypatch.setattr(indexed_suite.gateway.core, "query_media", retention)
    try:
        photos = [unique_photo(myntra_slice, 10 + i) for i in range(3)]
        clip = unique_clip(myntra_slice, 2)
        for p in photos:
            r = http.post("/v1/search", files={"image": ("q.jpg", p, "image/jpeg")}, data={"k": "5"})
            assert r.status_code == 200, r.text
        r = http.post("/v1/search", json={"video_base64": base64.b64encode(clip).decode(), "k": 5})
        assert r.status_code == 200, r.text
        assert retention.flush(30)
    finally:
        retention.close()
    # the oldest of four went: three files, named by hash, holding exactly what was sent
    expected = {f"{hashlib.sha256(p).hexdigest()}.jpg": p for p in photos[1:]}
    expected[f"{hashlib.sha256(clip).hexdigest()}.mp4"] = clip
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == expected


def test_a_failing_retention_folder_never_fails_the_search(
    http: httpx.Client, indexed_suite: Any, myntra_slice: Path, tmp_path: Path, logs: Logs
) -> None:
    (tmp_path / "not-a-folder").write_bytes(b"")
    retention = QueryMedia(tmp_path / "not-a-folder" / "kept")
    core = indexed_suite.gateway.core
    original, core.query_media = core.query_media, retention
    try:
        r = http.post("/v1/search", files={"image": ("q.jpg", unique_photo(myntra_slice, 3), "image/jpeg")})
        assert r.status_code == 200 and r.json()["hits"], r.text
        assert retention.flush(30)
    finally:
        core.query_media = original
        retention.close()
    assert any(e["event"] == "gateway.query_media_not_retained" and e["log_level"] == "warning" for e in logs)
