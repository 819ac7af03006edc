"""Object storage behind one interface: a local folder (embedded mode) or S3/MinIO.

Keys are validated before any backend sees them: relative, no ``..``, bounded length, a safe
character set, so an object key from an event or an API call can never reach outside the store.
Downloads are bounded in size.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic_settings import BaseSettings, SettingsConfigDict

from prism.errors import DeadlineExceeded, InvalidInput, NotFound, PayloadTooLarge, Unavailable

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


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    content_type: str = "application/octet-stream"
    metadata: Mapping[str, str] = field(default_factory=dict)


class ObjectStore(Protocol):
    """Bucket layout (both backends): ``products/<product id>.json`` (one catalog record),
    ``media/<product id>/<file>`` (its photos and videos)."""

    #: ``"folder"`` or ``"s3"``; events name the bucket, a folder store calls itself "local".
    bucket: str

    def get(self, key: str, max_bytes: int) -> bytes: ...

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...


class StoreSettings(BaseSettings):
    """Where objects live: a folder (embedded) or an S3 server (MinIO, SeaweedFS, AWS)."""

    model_config = SettingsConfigDict(env_prefix="PRISM_STORE_", extra="ignore")

    backend: Literal["folder", "s3"] = "folder"
    root: Path = Path("var/store")
    endpoint: str = "127.0.0.1:9000"  # host:port of the S3 API
    access_key: str = ""
    secret_key: str = ""
    bucket: str = "prism"
    secure: bool = False
    region: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_object_bytes: int = 20 * 2**20
    # MinIO: the ARN of an AMQP notification target (e.g. "arn:minio:sqs::PRISM:amqp") to subscribe
    # the bucket to on start; empty for stores without bucket notifications (SeaweedFS, AWS via SNS).
    notify_arn: str = ""


def open_store(settings: StoreSettings) -> ObjectStore:
    if settings.backend == "s3":
        return S3Store(settings)
    return FolderStore(settings.root)


def _meta_path(p: Path) -> Path:
    return p.with_name(f".{p.name}.meta.json")


class FolderStore:
    """Objects as files under ``root`` (embedded mode)."""

    bucket = "local"

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

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        info = ObjectInfo(key, len(data), hashlib.md5(data).hexdigest(), content_type, dict(metadata or {}))  # noqa: S324 - an S3-style etag, not security
        meta = {"content_type": content_type, "metadata": dict(metadata or {}), "etag": info.etag}
        _atomic_write(_meta_path(p), json.dumps(meta).encode())
        _atomic_write(p, data)
        return info

    def delete(self, key: str) -> None:
        p = self._path(key)
        p.unlink(missing_ok=True)
        _meta_path(p).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stat(self, key: str) -> ObjectInfo:
        p = self._path(key)
        try:
            size = p.stat().st_size
        except FileNotFoundError as exc:
            raise NotFound(f"no object {key!r}") from exc
        try:
            meta: dict[str, Any] = json.loads(_meta_path(p).read_text())
        except (OSError, ValueError):
            meta = {}  # a file put there by hand: hash it once to get an etag
            meta["etag"] = hashlib.md5(p.read_bytes()).hexdigest()  # noqa: S324
        return ObjectInfo(
            key,
            size,
            str(meta.get("etag", "")),
            str(meta.get("content_type", "application/octet-stream")),
            dict(meta.get("metadata") or {}),
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                key = p.relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield self.stat(key)


def _atomic_write(p: Path, data: bytes) -> None:
    """Write then rename: a reader never sees half an object."""
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class S3Store:
    """Objects in one bucket of an S3 server through the ``minio`` SDK (MinIO, SeaweedFS, AWS).

    Every call has connect and read timeouts; a download is refused from its size (``stat``)
    before any byte is read, and read with a hard cap in case the object grows meanwhile.
    """

    def __init__(self, settings: StoreSettings) -> None:
        import urllib3
        from minio import Minio

        self.settings = settings
        self.bucket = settings.bucket
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
            maxsize=16,
        )
        self.client = Minio(
            settings.endpoint,
            access_key=settings.access_key or None,
            secret_key=settings.secret_key or None,
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )

    def ensure_bucket(self) -> None:
        """Create the bucket if needed and, with ``notify_arn``, send its object events to the broker."""
        with self._errors("bucket"):
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
            if self.settings.notify_arn:
                from minio.notificationconfig import NotificationConfig, QueueConfig

                self.client.set_bucket_notification(
                    self.bucket,
                    NotificationConfig(
                        queue_config_list=[
                            QueueConfig(
                                ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                                config_id="prism",
                                queue=self.settings.notify_arn,
                            )
                        ]
                    ),
                )

    def _errors(self, key: str) -> _S3Errors:
        return _S3Errors(key, self.settings.endpoint)

    def get(self, key: str, max_bytes: int) -> bytes:
        info = self.stat(key)
        if info.size > max_bytes:
            raise PayloadTooLarge(f"object {key!r} is larger than {max_bytes} bytes")
        with self._errors(key):
            resp = self.client.get_object(self.bucket, validate_key(key))
            try:
                data = resp.read(max_bytes + 1)
            finally:
                resp.close()
                resp.release_conn()
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"object {key!r} is larger than {max_bytes} bytes")
        return bytes(data)

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        with self._errors(key):
            res = self.client.put_object(
                self.bucket,
                validate_key(key),
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata=dict(metadata or {}) or None,
            )
        return ObjectInfo(key, len(data), str(res.etag or ""), content_type, dict(metadata or {}))

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.remove_object(self.bucket, validate_key(key))

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def stat(self, key: str) -> ObjectInfo:
        with self._errors(key):
            st = self.client.stat_object(self.bucket, validate_key(key))
        meta = {
            k.lower().removeprefix("x-amz-meta-"): str(v)
            for k, v in (st.metadata or {}).items()
            if k.lower().startswith("x-amz-meta-")
        }
        return ObjectInfo(
            key,
            int(st.size or 0),
            str(st.etag or "").strip('"'),
            str(st.content_type or "application/octet-stream"),
            meta,
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._errors(prefix or "/"):
            objects = list(self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True))
        for o in objects:
            if o.object_name and not o.is_dir:
                yield ObjectInfo(str(o.object_name), int(o.size or 0), str(o.etag or "").strip('"'))


class _S3Errors:
    """Maps the SDK's and urllib3's failures to Prism errors (transient ones become Unavailable)."""

    def __init__(self, key: str, endpoint: str) -> None:
        self.key, self.endpoint = key, endpoint

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            return
        import urllib3
        from minio.error import S3Error

        if isinstance(exc, S3Error):
            if exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
                raise NotFound(f"no object {self.key!r}") from exc
            if exc.code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
                raise Unavailable(f"object store {exc.code} on {self.key!r}") from exc
            raise InvalidInput(f"object store refused {self.key!r}: {exc.code}", code="store_error") from exc
        if isinstance(exc, urllib3.exceptions.TimeoutError):
            raise DeadlineExceeded(f"object store at {self.endpoint} timed out on {self.key!r}") from exc
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
            raise Unavailable(f"object store at {self.endpoint} unreachable: {type(exc).__name__}") from exc
