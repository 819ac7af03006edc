"""Who may call the gateway, and how often: API keys with scopes, per-key rate limits.

Keys come from settings (``PRISM_GATEWAY_API_KEYS``: ``name:key:scope+scope,...``) or a file (one
``name:key:scope+scope`` per line, ``#`` comments).  A request names its key in ``X-API-Key`` or
``Authorization: Bearer``; keys are compared in constant time (``hmac.compare_digest`` against every
configured key, so timing reveals neither which key nor how much of it matched).  Scopes:
``search`` (search, products, similar, images), ``ingest`` (the S3 event webhook), ``admin``
(everything).  With no keys configured the gateway is open, as the embedded demo on loopback is.

Each key has a token bucket (``rate`` requests per second, ``burst`` at once); an empty bucket
answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SCOPES = frozenset({"search", "ingest", "admin"})


@dataclass(frozen=True)
class ApiKey:
    name: str
    secret: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def parse_keys(lines: Iterable[str]) -> list[ApiKey]:
    """``name:key:scope+scope`` entries; raises ValueError naming the bad entry (never the key)."""
    keys: list[ApiKey] = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or not parts[0] or len(parts[1]) < 16:
            raise ValueError(f"API key entry {n} must be name:key:scopes with a key of at least 16 characters")
        scopes = frozenset(s for s in parts[2].split("+") if s)
        if not scopes or not scopes <= SCOPES:
            raise ValueError(f"API key entry {n} ({parts[0]}) has scopes outside {sorted(SCOPES)}")
        keys.append(ApiKey(parts[0], parts[1], scopes))
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise ValueError("API key names must be unique")
    return keys


def load_keys(inline: str, path: Path | None) -> list[ApiKey]:
    lines = [e for e in inline.split(",") if e.strip()]
    if path is not None:
        lines += path.read_text(encoding="utf-8").splitlines()
    return parse_keys(lines)


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """Token buckets per key name: ``rate`` per second refill, ``burst`` capacity."""

    rate: float
    burst: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, who: str, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds until a token is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            b = self._buckets.get(who)
            if b is None:
                b = self._buckets[who] = _Bucket(float(self.burst), now)
            b.tokens = min(float(self.burst), b.tokens + (now - b.updated) * self.rate)
            b.updated = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0.0
            return (1.0 - b.tokens) / self.rate


class Access:
    """Authentication (which key), authorisation (which scope) and rate limiting for one gateway."""

    def __init__(self, keys: list[ApiKey], limiter: RateLimiter) -> None:
        self.keys = keys
        self.limiter = limiter

    @property
    def open(self) -> bool:
        return not self.keys

    def identify(self, presented: str | None) -> ApiKey | None:
        if not presented:
            return None
        found: ApiKey | None = None
        given = presented.encode()
        for k in self.keys:  # every key is compared: the time does not depend on which one matched
            if hmac.compare_digest(given, k.secret.encode()):
                found = k
        return found

    def retry_after(self, key: ApiKey | None, client: str) -> int:
        """Whole seconds for Retry-After (0: go ahead); anonymous callers are limited per address."""
        wait = self.limiter.acquire(key.name if key is not None else f"ip:{client}")
        return 0 if wait <= 0 else max(1, math.ceil(wait))
