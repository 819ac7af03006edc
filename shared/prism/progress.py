"""Progress for long work (ingest, eval, bench): a live line on a terminal, a log event every few seconds otherwise."""

from __future__ import annotations

import sys
import time

import structlog

log = structlog.get_logger(__name__)


class Progress:
    def __init__(self, what: str, total: int | None, *, every_s: float = 5.0, enabled: bool = True) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.enabled = enabled
        self._every = every_s
        self._start = time.monotonic()
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def update(self, n: int = 1, **extra: object) -> None:
        self.done += n
        now = time.monotonic()
        if not self.enabled:
            return
        if self._tty:
            if now - self._last >= 0.2 or (self.total is not None and self.done >= self.total):
                rate = self.done / max(now - self._start, 1e-9)
                total = f"/{self.total}" if self.total else ""
                sys.stderr.write(f"\r{self.what}: {self.done}{total} ({rate:.1f}/s)   ")
                sys.stderr.flush()
                self._last = now
        elif now - self._last >= self._every:
            log.info(
                "progress",
                what=self.what,
                done=self.done,
                total=self.total,
                rate=round(self.done / max(now - self._start, 1e-9), 1),
                **extra,
            )
            self._last = now

    def close(self) -> float:
        elapsed = time.monotonic() - self._start
        if self.enabled and self._tty:
            sys.stderr.write("\n")
        return elapsed
