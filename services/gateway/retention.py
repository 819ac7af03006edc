"""What the gateway keeps of a shopper's query photo or video.

By default nothing: the bytes go to the encoder (uncached, ``ephemeral``) and are dropped; the log
gets one line with the size, the type sniffed from the magic bytes and the sha256.  For debugging,
``PRISM_GATEWAY_RETAIN_QUERY_MEDIA_DIR`` keeps each one in that folder, named by its hash, bounded
by a file count and a byte total (oldest removed first).  Retention is best effort: files are
written by one background thread from a small queue, so a slow or full disk never delays a search,
and a failed write is a warning, never a failed search.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from prism.media.sniff import sniff_format

from .settings import Settings

log = structlog.get_logger(__name__)

MediaKind = Literal["image", "video"]

# Sniffed format -> (media type, file extension).  Unknown bytes are still retained (a refused
# upload is exactly what one debugs) as application/octet-stream.
_TYPES: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
    "BMP": ("image/bmp", "bmp"),
    "TIFF": ("image/tiff", "tif"),
    "HEIF": ("image/heif", "heic"),
    "AVIF": ("image/avif", "avif"),
    "MP4/QuickTime": ("video/mp4", "mp4"),
    "Matroska/WebM": ("video/webm", "webm"),
    "AVI": ("video/x-msvideo", "avi"),
    "Ogg": ("video/ogg", "ogv"),
}
_UNKNOWN = ("application/octet-stream", "bin")
_TMP_SUFFIX = ".part"


def media_type(data: bytes) -> tuple[str, str]:
    """(media type, file extension) of ``data`` from its magic bytes; never decodes."""
    return _TYPES.get(sniff_format(data) or "", _UNKNOWN)


@dataclass(frozen=True)
class RetentionLimits:
    max_files: int = 1000
    max_bytes: int = 2**30


class QueryMedia:
    """Logs each query photo/video as size, type and hash; retains the bytes only when ``retain_dir``
    is set.  ``record`` returns the sha256 (the gateway binds cursors to it too)."""

    def __init__(
        self, retain_dir: Path | None = None, limits: RetentionLimits | None = None, *, queue_size: int = 8
    ) -> None:
        self.retain_dir = retain_dir
        self.limits = limits or RetentionLimits()
        # Bounded: at most queue_size uploads (each <= the upload limit) wait in memory for the disk.
        self._queue: queue.Queue[tuple[str, str, bytes] | None] = queue.Queue(maxsize=queue_size)
        self._files: OrderedDict[str, int] = OrderedDict()  # name -> bytes, oldest first
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryMedia:
        limits = RetentionLimits(settings.retain_query_media_max_files, settings.retain_query_media_max_bytes)
        return cls(settings.retain_query_media_dir, limits)

    def record(self, kind: MediaKind, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        mime, ext = media_type(data)
        log.info("gateway.query_media", kind=kind, bytes=len(data), type=mime, sha256=digest)
        if self.retain_dir is not None:
            self._enqueue(f"{digest}.{ext}", kind, data)
        return digest

    # -- retention (debugging only) -----------------------------------------------------------
    def _enqueue(self, name: str, kind: str, data: bytes) -> None:
        if self._closed:
            return
        self._start()
        try:
            self._queue.put_nowait((name, kind, data))
        except queue.Full:
            log.warning("gateway.query_media_not_retained", file=name, bytes=len(data), reason="retention queue full")

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="query-media-retention", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        scanned = False
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if not scanned:  # what an earlier run left counts against the limits too
                    self._scan()
                    scanned = True
                self._write(*item)
            except Exception as exc:  # noqa: BLE001 - retention must never take the gateway down
                log.warning(
                    "gateway.query_media_not_retained",
                    file=item[0] if item else None,
                    reason=f"{type(exc).__name__}: {exc}",
                )
            finally:
                self._queue.task_done()

    def _scan(self) -> None:
        assert self.retain_dir is not None
        self.retain_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        found: list[tuple[float, str, int]] = []
        for entry in os.scandir(self.retain_dir):
            if entry.name.endswith(_TMP_SUFFIX):  # a write cut short by a crash
                Path(entry.path).unlink(missing_ok=True)
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                found.append((st.st_mtime, entry.name, st.st_size))
        self._files = OrderedDict((name, size) for _, name, size in sorted(found))
        self._evict()

    def _write(self, name: str, kind: str, data: bytes) -> None:
        assert self.retain_dir is not None
        if len(data) > self.limits.max_bytes:
            log.warning("gateway.query_media_not_retained", file=name, bytes=len(data), reason="larger than max_bytes")
            return
        path = self.retain_dir / name
        if name in self._files and path.exists():
            # the same photo again: keep one copy, now the most recent
            os.utime(path)
            self._files.move_to_end(name)
            return
        tmp = self.retain_dir / f".{name}{_TMP_SUFFIX}"
        # Owner-only: these are shoppers' photos, kept for debugging.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)  # readers never see a partial file
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._files[name] = len(data)
        self._files.move_to_end(name)
        self._evict()
        log.debug("gateway.query_media_retained", kind=kind, file=name, bytes=len(data))

    def _evict(self) -> None:
        assert self.retain_dir is not None
        total = sum(self._files.values())
        while self._files and (len(self._files) > self.limits.max_files or total > self.limits.max_bytes):
            name, size = self._files.popitem(last=False)
            (self.retain_dir / name).unlink(missing_ok=True)
            total -= size

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued file is written (tests, shutdown); False if it took longer."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``), then stop the writer thread."""
        self._closed = True
        if self._thread is None:
            return
        self.flush(timeout)
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return  # the daemon thread dies with the process
        self._thread.join(timeout)
