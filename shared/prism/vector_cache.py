"""A content-addressed cache of vectors, so no input is ever encoded twice.

Keys are sha256 digests of (model id, space, kind, input bytes); values are float32 vectors.
Backed by SQLite (WAL) so every encoder process on a machine shares it and it survives restarts;
``prism eval`` re-indexing a catalog into a fresh index costs lookups instead of model time.

The cache is best effort: it sits on the query path, so a lookup or a write that would wait on
another process's lock is skipped (a miss, or a vector not stored) instead of stalling a request.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import structlog

log = structlog.get_logger(__name__)

BUSY_TIMEOUT_MS = 50


def cache_key(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        b = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def vector_key(model_id: str, shape: tuple[int, ...], kind: str, content: bytes | str) -> str:
    """The key the encoder services store a vector under; training reads their vectors with it."""
    return cache_key(model_id, str(shape), kind, content)


class VectorCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=5.0, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        # Set up with a patient timeout above; from now on never wait long for another writer.
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._lock:
            try:
                for start in range(0, len(keys), 500):
                    chunk = list(keys[start : start + 500])
                    q = f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(chunk))})"
                    for key, blob in self._conn.execute(q, chunk):
                        out[key] = np.frombuffer(blob, dtype=np.float32).copy()
            except sqlite3.OperationalError as exc:
                log.debug("vector_cache.read_skipped", reason=str(exc))
        return out

    def put_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        if not items:
            return
        rows = [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items]
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                log.debug("vector_cache.write_skipped", reason=str(exc), items=len(rows))
                return
            try:
                self._conn.executemany("INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)", rows)
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._conn.execute("ROLLBACK")
                log.debug("vector_cache.write_skipped", reason=str(exc), items=len(rows))

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
