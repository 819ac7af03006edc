"""Query photos and videos: logged as size, type and hash only; retained only when a setting asks."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import random
import stat
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from prism.logs import setup_logging
from services.gateway.retention import QueryMedia, RetentionLimits, media_type
from services.gateway.settings import Settings
from tests.media_samples import jpeg

pytestmark = pytest.mark.unit

Logs = list[MutableMapping[str, Any]]


def photo(seed: int) -> bytes:
    """A distinct real JPEG per seed (noise, so the bytes are unique and not compressible to nothing)."""
    from PIL import Image

    rng = random.Random(seed)
    im = Image.frombytes("RGB", (48, 48), bytes(rng.randrange(256) for _ in range(48 * 48 * 3)))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def leaks(data: bytes, events: Logs) -> bool:
    """Whether any form of ``data`` (raw, repr, hex, base64 of a slice from its middle) is in the events."""
    chunk = data[len(data) // 2 : len(data) // 2 + 24]
    text = repr(events)
    forms = [repr(chunk)[2:-1], chunk.hex(), base64.b64encode(chunk).decode()[:24]]
    as_bytes = any(isinstance(v, (bytes, bytearray, memoryview)) for e in events for v in e.values())
    return as_bytes or any(f in text for f in forms)


def media_events(events: Logs) -> Logs:
    return [e for e in events if e["event"] == "gateway.query_media"]


def test_default_logs_size_type_and_hash_and_writes_nothing(
    logs: Logs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    qm = QueryMedia.from_settings(Settings())
    assert qm.retain_dir is None
    data = photo(1)
    digest = qm.record("image", data)
    assert digest == hashlib.sha256(data).hexdigest()
    [event] = media_events(logs)
    assert {k: event[k] for k in ("kind", "bytes", "type", "sha256")} == {
        "kind": "image",
        "bytes": len(data),
        "type": "image/jpeg",
        "sha256": digest,
    }
    assert not leaks(data, logs)
    assert qm.flush(1) and qm._thread is None  # no writer thread, nothing queued
    assert list(tmp_path.iterdir()) == []
    qm.close()


def test_types_are_sniffed_from_the_bytes() -> None:
    assert media_type(jpeg()) == ("image/jpeg", "jpg")
    assert media_type(b"\x00\x00\x00\x18ftypmp42" + bytes(16)) == ("video/mp4", "mp4")
    assert media_type(b"not a photo at all \x00\x01") == ("application/octet-stream", "bin")


def test_retention_keeps_each_file_by_hash_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISM_GATEWAY_RETAIN_QUERY_MEDIA_DIR", str(tmp_path / "kept"))
    qm = QueryMedia.from_settings(Settings())
    try:
        data = photo(2)
        digest = qm.record("image", data)
        clip = b"\x00\x00\x00\x18ftypisom" + os.urandom(300)
        clip_digest = qm.record("video", clip)
        assert qm.flush(10)
        kept = tmp_path / "kept" / f"{digest}.jpg"
        assert kept.read_bytes() == data
        assert (tmp_path / "kept" / f"{clip_digest}.mp4").read_bytes() == clip
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "kept").stat().st_mode) == 0o700
    finally:
        qm.close()


def test_retention_limits_remove_the_oldest(tmp_path: Path) -> None:
    qm = QueryMedia(tmp_path, RetentionLimits(max_files=3, max_bytes=10**9))
    try:
        photos = [photo(10 + i) for i in range(5)]
        digests = [qm.record("image", p) for p in photos]
        assert qm.flush(10)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{d}.jpg" for d in digests[2:])
        # the same photo again is kept once, and becomes the most recent: the next new one evicts another
        qm.record("image", photos[2])
        qm.record("image", photo(99))
        assert qm.flush(10)
        names = {p.name for p in tmp_path.iterdir()}
        assert names == {f"{digests[2]}.jpg", f"{digests[4]}.jpg", f"{hashlib.sha256(photo(99)).hexdigest()}.jpg"}
    finally:
        qm.close()
    size = len(photos[0])
    qm = QueryMedia(tmp_path / "bytes", RetentionLimits(max_files=100, max_bytes=int(size * 2.5)))
    try:
        for p in photos:
            qm.record("image", p)
        huge = b"\xff\xd8\xff" + os.urandom(size * 3)  # larger than the whole budget: not kept at all
        qm.record("image", huge)
        assert qm.flush(10)
        files = list((tmp_path / "bytes").iterdir())
        assert sum(f.stat().st_size for f in files) <= size * 2.5 and len(files) == 2
        assert {f.read_bytes() for f in files} == set(photos[3:])
    finally:
        qm.close()


def test_limits_count_what_an_earlier_run_left(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / f"{i:064x}.jpg").write_bytes(b"old")
        os.utime(tmp_path / f"{i:064x}.jpg", (1000 + i, 1000 + i))
    (tmp_path / ".cut-short.jpg.part").write_bytes(b"partial")
    qm = QueryMedia(tmp_path, RetentionLimits(max_files=3))
    try:
        new = qm.record("image", photo(3))
        assert qm.flush(10)
        assert {p.name for p in tmp_path.iterdir()} == {f"{2:064x}.jpg", f"{3:064x}.jpg", f"{new}.jpg"}
    finally:
        qm.close()


def test_a_failed_write_is_a_warning_not_an_error(logs: Logs, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    qm = QueryMedia(blocker / "kept")  # cannot be created: its parent is a file
    try:
        data = photo(4)
        assert qm.record("image", data) == hashlib.sha256(data).hexdigest()
        assert qm.flush(10)
    finally:
        qm.close()
    [warning] = [e for e in logs if e["event"] == "gateway.query_media_not_retained"]
    assert warning["log_level"] == "warning" and "NotADirectoryError" in warning["reason"]
    assert not leaks(data, logs)


def test_settings_bounds_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("PRISM_GATEWAY_RETAIN_QUERY_MEDIA_MAX_FILES", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_console_tracebacks_print_no_local_variables(capfd: pytest.CaptureFixture[str]) -> None:
    """structlog's rich tracebacks print every frame's locals by default: in the gateway those are
    a shopper's photo bytes."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("INFO", "console", force=True)
        secret = os.urandom(24).hex().encode()  # not a literal: rich prints the source lines around a frame

        def encode(data: bytes) -> None:
            raise ValueError("corrupt")

        try:
            encode(secret)
        except ValueError:
            structlog.get_logger("test").exception("rpc.failed")
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        sys.stderr.flush()
        err = capfd.readouterr().err
    finally:
        structlog.configure(**saved)
        root.handlers[:], root.level = handlers, level
    assert "rpc.failed" in err and "ValueError" in err and "ASGI" in err
    assert secret.decode() not in err and secret.decode()[:16] not in err
