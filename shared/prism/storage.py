"""Object storage behind one interface: a local folder (embedded mode) or S3/MinIO.

Keys are validated before any backend sees them: relative, no ``..``, bounded length, a safe
character set, so an object key from an event or an API call can never reach outside the store.
Downloads are bounded in size.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from prism.errors import InvalidInput, NotFound, PayloadTooLarge

MAX_KEY_LENGTH = 512
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/=+-]*$")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise InvalidInput."""
    if not isinstance(key, str) or not key:
        raise InvalidInput("object key is empty", code="invalid_key")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"object key longer than {MAX_KEY_LENGTH} characters", code="invalid_key")
    if not _KEY_RE.match(key) or "//" in key or key.endswith("/"):
        raise InvalidInput(
            f"object key {key[:80]!r} has characters outside A-Z a-z 0-9 . _ / = + -", code="invalid_key"
        )
    if any(part in ("..", ".") for part in key.split("/")):
        raise InvalidInput(f"object key {key[:80]!r} contains a relative path segment", code="invalid_key")
    return key


class ObjectStore(Protocol):
    def get(self, key: str, max_bytes: int) -> bytes: ...

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...


class FolderStore:
    """Objects as files under ``root`` (embedded mode)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        p = (self.root / validate_key(key)).resolve()
        if not p.is_relative_to(self.root):  # symlinks inside the store must not lead out of it
            raise InvalidInput("object key escapes the store", code="invalid_key")
        return p

    def get(self, key: str, max_bytes: int) -> bytes:
        p = self._path(key)
        try:
            with p.open("rb") as fh:
                data = fh.read(max_bytes + 1)
        except FileNotFoundError as exc:
            raise NotFound(f"no object {key!r}") from exc
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"object {key!r} is larger than {max_bytes} bytes")
        return data

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half an object.
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()
