"""The S3 backend of the object store against a real S3 server (SeaweedFS), through the minio SDK."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from prism.devservers import SeaweedFS, free_port
from prism.errors import InvalidInput, NotFound, PayloadTooLarge, Unavailable
from prism.storage import FolderStore, ObjectStore, S3Store, StoreSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Store]:
    server = SeaweedFS.start(tmp_path_factory.mktemp("weed-store"))
    store = S3Store(StoreSettings(backend="s3", endpoint=server.endpoint, bucket=f"t-{uuid.uuid4().hex[:8]}"))
    store.ensure_bucket()
    yield store
    server.stop()


@pytest.fixture(params=["s3", "folder"])
def store(request: pytest.FixtureRequest, s3: S3Store, tmp_path: Path) -> ObjectStore:
    return s3 if request.param == "s3" else FolderStore(tmp_path / "store")


def test_put_get_stat_list_delete(store: ObjectStore) -> None:
    prefix = f"media/{uuid.uuid4().hex[:6]}"
    info = store.put(f"{prefix}/a.jpg", b"abc" * 100, "image/jpeg", {"prism-run": "r1"})
    store.put(f"{prefix}/b.jpg", b"xyz")
    st = store.stat(f"{prefix}/a.jpg")
    assert st.size == 300 and st.etag == info.etag and st.content_type == "image/jpeg"
    assert st.metadata.get("prism-run") == "r1"
    assert store.get(f"{prefix}/a.jpg", 1000) == b"abc" * 100
    assert sorted(i.key for i in store.list(prefix + "/")) == [f"{prefix}/a.jpg", f"{prefix}/b.jpg"]
    store.delete(f"{prefix}/a.jpg")
    assert not store.exists(f"{prefix}/a.jpg") and store.exists(f"{prefix}/b.jpg")
    with pytest.raises(NotFound):
        store.get(f"{prefix}/a.jpg", 1000)


def test_downloads_are_bounded_and_keys_validated(store: ObjectStore) -> None:
    store.put("media/big/x.bin", b"0" * 5000)
    with pytest.raises(PayloadTooLarge):
        store.get("media/big/x.bin", 4999)
    for key in ("../etc/passwd", "/abs/key", "a//b", "a/./b", "x" * 600, "semi;colon", ""):
        with pytest.raises(InvalidInput):
            store.get(key, 10)


def test_unreachable_store_is_unavailable_not_a_crash() -> None:
    dead = S3Store(StoreSettings(backend="s3", endpoint=f"127.0.0.1:{free_port()}", connect_timeout_s=0.5))
    with pytest.raises(Unavailable):
        dead.get("media/x/y.jpg", 10)
