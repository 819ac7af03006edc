from pathlib import Path

import pytest

from prism.errors import InvalidInput, NotFound, PayloadTooLarge
from prism.storage import FolderStore, validate_key

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../x",
        "media/../../x",
        "a//b",
        "a/./b",
        "media/x\x00.jpg",
        "media/a b.jpg",
        "x" * 600,
        "media/",
        "~root/x",
        "C:\\win",
    ],
)
def test_path_tricks_are_refused(key: str) -> None:
    with pytest.raises(InvalidInput):
        validate_key(key)


def test_folder_store_roundtrip_and_bounds(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "store")
    store.put("media/0111/front.jpg", b"abc")
    assert store.exists("media/0111/front.jpg")
    assert store.get("media/0111/front.jpg", max_bytes=10) == b"abc"
    with pytest.raises(PayloadTooLarge):
        store.get("media/0111/front.jpg", max_bytes=2)
    with pytest.raises(NotFound):
        store.get("media/none.jpg", max_bytes=10)
    (tmp_path / "outside.txt").write_text("secret")
    (tmp_path / "store" / "link").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(InvalidInput):
        store.get("link", max_bytes=100)
    store.delete("media/0111/front.jpg")
    assert not store.exists("media/0111/front.jpg")
