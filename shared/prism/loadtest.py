"""Load test of the gateway's HTTP API: N concurrent clients for D seconds (``prism loadtest``).

Each client is closed-loop (it sends its next request when the previous one answered, after an
optional think time), so the load adapts to what the server sustains and the numbers say what one
server gives N shoppers: throughput, latency percentiles, errors. The mix is a shopper's: English
and Chinese text, text with filters and facets, real photos (multipart and base64; optionally short
videos), "similar products" and product pages. Queries come from a query set in the DESIGN.md
format; product ids and filter values are discovered from the gateway itself, so any indexed
catalog works. An error is anything but a 2xx with the expected JSON: a non-2xx, a timeout, a
dropped connection, a malformed body.

The server's resident memory is sampled over the run (its ``/metrics`` ``process_resident_memory_bytes``,
or ``/proc/<pid>`` for a local process) from the end of a warm-up phase (whose requests are counted
apart) to the end, to show whether memory is stable under load.

Run the generator in its own process (the CLI does): in the server's process it would compete with
the server for the GIL and its memory would be counted as the server's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from prism.catalog import read_queries

log = structlog.get_logger(__name__)


class LoadSettings(BaseSettings):
    """Defaults of ``prism loadtest`` (flags override them); the API key is best given here, not in argv."""

    model_config = SettingsConfigDict(env_prefix="PRISM_LOADTEST_", extra="ignore")

    url: str = "http://127.0.0.1:8080"
    clients: int = Field(default=50, ge=1, le=2000)
    seconds: float = Field(default=60.0, gt=0)
    warmup_s: float = Field(default=10.0, ge=0)
    # Per request: a search slower than this is an error (a shopper has given up long before).
    timeout_s: float = Field(default=30.0, gt=0)
    think_s: float = Field(default=0.0, ge=0)
    rss_interval_s: float = Field(default=1.0, gt=0)
    api_key: str = ""
    seed: int = 0


@dataclass(frozen=True)
class Mix:
    """Relative weights of the request kinds."""

    text_en: float = 0.30
    text_zh: float = 0.15
    filtered: float = 0.15  # text with a colour or type filter and both facets
    photo: float = 0.10
    similar: float = 0.20
    product: float = 0.10
    video: float = 0.0  # clip decoding is far costlier than a photo; opt in with --mix video=0.02

    @classmethod
    def parse(cls, spec: str) -> Mix:
        """``"text_en=0.3,photo=0.1"``: the named weights replace the defaults."""
        known = {f.name for f in fields(cls)}
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            if not sep or name.strip() not in known:
                raise ValueError(f"mix entry {part!r}: expected NAME=WEIGHT with NAME one of {sorted(known)}")
            weight = float(value)
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"mix weight of {name} must be a finite number >= 0")
            values[name.strip()] = weight
        mix = cls(**{**asdict(cls()), **values})
        if not any(asdict(mix).values()):
            raise ValueError("every mix weight is 0")
        return mix


@dataclass
class Workload:
    """What the clients send: query texts and media from a query set, ids and filters from the gateway."""

    texts_en: list[str]
    texts_zh: list[str]
    photos: list[bytes]
    videos: list[bytes] = field(default_factory=list)
    product_ids: list[str] = field(default_factory=list)
    filters: list[dict[str, list[str]]] = field(default_factory=list)

    @classmethod
    def from_queries(cls, path: Path, *, max_photos: int = 40, max_videos: int = 4) -> Workload:
        queries = read_queries(path)
        photos = [q.image for q in queries if q.image is not None]
        videos = [q.video for q in queries if q.video is not None]
        # Spread over the set (plain photos and augmented ones alike), not just its first lines.
        pick = random.Random(0)
        photos = pick.sample(photos, min(max_photos, len(photos)))
        videos = pick.sample(videos, min(max_videos, len(videos)))
        return cls(
            texts_en=[q.text for q in queries if q.text and q.kind == "text-en"],
            texts_zh=[q.text for q in queries if q.text and q.kind == "text-zh"],
            photos=[p.read_bytes() for p in photos if p.is_file()],
            videos=[v.read_bytes() for v in videos if v.is_file()],
        )

    def check(self, mix: Mix) -> None:
        needs = {
            "text_en": self.texts_en,
            "text_zh": self.texts_zh,
            "filtered": self.texts_en and self.filters,
            "photo": self.photos,
            "video": self.videos,
            "similar": self.product_ids,
            "product": self.product_ids,
        }
        missing = [k for k, have in needs.items() if getattr(mix, k) > 0 and not have]
        if missing:
            raise ValueError(f"the workload has nothing for the request kinds {missing}")


async def discover(http: httpx.AsyncClient, workload: Workload, *, probes: int = 12) -> None:
    """Product ids (for similar and product pages) and filter values (from facets) of what the
    gateway has indexed, found by searching it with the workload's own texts."""
    ids: dict[str, None] = {}
    facet_values: dict[str, dict[str, int]] = {}
    for text in (workload.texts_en or ["shirt"])[:: max(1, len(workload.texts_en) // probes)][:probes]:
        r = await http.post("/v1/search", json={"text": text, "k": 50, "facets": ["colour", "type"]})
        r.raise_for_status()
        body = r.json()
        ids.update((h["id"], None) for h in body["hits"])
        for name, counts in body.get("facets", {}).items():
            for value, n in counts.items():
                facet_values.setdefault(name, {})[value] = facet_values.get(name, {}).get(value, 0) + n
    if not ids:
        raise RuntimeError(f"{http.base_url} returned no products for the workload's texts: is a catalog indexed?")
    workload.product_ids = list(ids)
    # The commoner values: a filter that matches nothing is a cheap, unrealistic request.
    workload.filters = [
        {name: [value]}
        for name, counts in sorted(facet_values.items())
        for value, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:8]
    ]


@dataclass(frozen=True)
class Request:
    kind: str
    method: str
    path: str
    kwargs: dict[str, Any]
    expect: str  # the key a good JSON answer has


def next_request(rng: random.Random, mix: Mix, w: Workload) -> Request:
    kinds = [f.name for f in fields(Mix)]
    kind = rng.choices(kinds, weights=[getattr(mix, k) for k in kinds])[0]
    k = rng.choice((10, 20, 20, 40))
    if kind == "text_en":
        return Request(kind, "POST", "/v1/search", {"json": {"text": rng.choice(w.texts_en), "k": k}}, "hits")
    if kind == "text_zh":
        return Request(kind, "POST", "/v1/search", {"json": {"text": rng.choice(w.texts_zh), "k": k}}, "hits")
    if kind == "filtered":
        body = {"text": rng.choice(w.texts_en), "k": k, "filters": rng.choice(w.filters), "facets": ["colour", "type"]}
        if rng.random() < 0.3:
            body["price_max"] = rng.choice((500, 1000, 2000, 5000))
        return Request(kind, "POST", "/v1/search", {"json": body}, "hits")
    if kind in ("photo", "video"):
        data = rng.choice(w.photos if kind == "photo" else w.videos)
        field_name = "image" if kind == "photo" else "video"
        if rng.random() < 0.5:  # the app uploads multipart, the bot often sends base64 JSON
            files = {field_name: (f"query.{'jpg' if kind == 'photo' else 'mp4'}", data)}
            return Request(kind, "POST", "/v1/search", {"files": files, "data": {"k": str(k)}}, "hits")
        body = {f"{field_name}_base64": base64.b64encode(data).decode(), "k": k}
        return Request(kind, "POST", "/v1/search", {"json": body}, "hits")
    pid = rng.choice(w.product_ids)
    if kind == "similar":
        same = "true" if rng.random() < 0.5 else "false"
        return Request(
            kind, "GET", f"/v1/products/{pid}/similar", {"params": {"k": k, "exclude_same_group": same}}, "hits"
        )
    return Request(kind, "GET", f"/v1/products/{pid}", {}, "id")


# ------------------------------------------------------------------------------------ measuring


@dataclass
class Phase:
    latencies: dict[str, list[float]] = field(default_factory=dict)  # kind -> seconds (good answers)
    errors: dict[str, int] = field(default_factory=dict)  # "kind: reason" -> count
    samples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values()) + sum(self.errors.values())

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    def ok(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)

    def error(self, kind: str, reason: str, detail: str) -> None:
        key = f"{kind}: {reason}"
        self.errors[key] = self.errors.get(key, 0) + 1
        if len(self.samples) < 20:
            self.samples.append(f"{key}: {detail[:300]}")


def _ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def _no_nan(value: Any) -> Any:
    """NaN (a percentile of nothing) as null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def _rss_from_metrics(text: str) -> int | None:
    m = re.search(r"^process_resident_memory_bytes\s+(\S+)$", text, re.MULTILINE)
    return int(float(m.group(1))) if m else None


def _rss_from_proc(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


@dataclass
class LoadReport:
    url: str
    clients: int
    seconds: float  # the measured phase, wall time from its start to its last answer
    warmup_s: float
    requests: int
    errors: int
    req_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    by_kind: dict[str, dict[str, float]]
    error_counts: dict[str, int]
    error_samples: list[str]
    client_min_requests: int  # the fewest requests one client got answered (a starved client shows here)
    warmup_requests: int
    warmup_errors: int
    rss_source: str
    rss_start: int | None  # at the end of the warm-up
    rss_end: int | None
    rss_max: int | None
    rss_samples: list[tuple[float, int]]  # (seconds since the measured phase began, bytes)

    @property
    def rss_growth(self) -> float | None:
        """(end - start) / start over the measured phase; None without RSS samples."""
        if not self.rss_start or self.rss_end is None:
            return None
        return (self.rss_end - self.rss_start) / self.rss_start

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["rss_growth"] = self.rss_growth
        clean: dict[str, Any] = _no_nan(out)
        return clean

    def summary(self) -> str:
        mib = 2**20

        def mem(v: int | None) -> str:
            return f"{v / mib:.0f} MiB" if v is not None else "n/a"

        growth = self.rss_growth
        lines = [
            f"load test of {self.url}: {self.clients} clients for {self.seconds:.1f} s"
            f" (after {self.warmup_s:.0f} s warm-up)",
            f"  requests {self.requests}  ({self.req_per_s:.1f} req/s)   errors {self.errors}"
            f"   (warm-up: {self.warmup_requests} requests, {self.warmup_errors} errors)"
            f"   fewest per client {self.client_min_requests}",
            f"  latency p50 {self.p50_ms:.0f} ms   p90 {self.p90_ms:.0f} ms   p99 {self.p99_ms:.0f} ms"
            f"   max {self.max_ms:.0f} ms",
            f"  server RSS ({self.rss_source}): start {mem(self.rss_start)}  end {mem(self.rss_end)}"
            f"  max {mem(self.rss_max)}  growth {f'{growth:+.1%}' if growth is not None else 'n/a'}",
            f"  {'kind':<10}{'n':>7}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}",
        ]
        for kind, m in sorted(self.by_kind.items()):
            lines.append(f"  {kind:<10}{int(m['n']):>7}{int(m['errors']):>8}{m['p50_ms']:>9.0f}{m['p99_ms']:>9.0f}")
        lines += [f"  error {key}: {n}" for key, n in sorted(self.error_counts.items())]
        lines += [f"    e.g. {s}" for s in self.error_samples[:5]]
        return "\n".join(lines)


@dataclass(frozen=True)
class Progress:
    elapsed_s: float
    total_s: float
    phase: str
    requests: int
    errors: int
    req_per_s: float
    p50_ms: float


async def run_load(
    settings: LoadSettings,
    workload: Workload,
    *,
    mix: Mix | None = None,
    rss_pid: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 5.0,
) -> LoadReport:
    """Warm up for ``settings.warmup_s``, then measure ``settings.clients`` clients for ``settings.seconds``."""
    mix = mix or Mix()
    headers = {"x-api-key": settings.api_key} if settings.api_key else {}
    # One connection per client (plus the memory sampler's), kept alive as an app's would be.
    limits = httpx.Limits(max_connections=settings.clients + 2, max_keepalive_connections=settings.clients + 2)
    timeout = httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 10.0))
    async with httpx.AsyncClient(base_url=settings.url, timeout=timeout, limits=limits, headers=headers) as http:
        if not workload.product_ids:
            await discover(http, workload)
        workload.check(mix)
        warmup, measured = Phase(), Phase()
        per_client = [0] * settings.clients  # measured-phase requests of each client
        rss: list[tuple[float, int]] = []
        rss_source = f"/proc/{rss_pid}" if rss_pid is not None else "/metrics"

        async def sample_rss() -> int | None:
            if rss_pid is not None:
                return _rss_from_proc(rss_pid)
            try:
                r = await http.get("/metrics")
                return _rss_from_metrics(r.text) if r.status_code == 200 else None
            except httpx.HTTPError:
                return None

        start = time.monotonic()
        measure_from = start + settings.warmup_s
        end = measure_from + settings.seconds

        async def client(n: int) -> None:
            rng = random.Random(f"{settings.seed}-{n}")
            while (sent := time.monotonic()) < end:
                req = next_request(rng, mix, workload)
                phase = warmup if sent < measure_from else measured
                if phase is measured:
                    per_client[n] += 1
                t0 = time.perf_counter()
                try:
                    r = await http.request(req.method, req.path, **req.kwargs)
                    elapsed = time.perf_counter() - t0
                    if not 200 <= r.status_code < 300:
                        phase.error(req.kind, f"HTTP {r.status_code}", r.text)
                    elif req.expect not in r.json():
                        phase.error(req.kind, "bad body", r.text)
                    else:
                        phase.ok(req.kind, elapsed)
                except (httpx.HTTPError, ValueError) as exc:  # timeouts, resets, malformed JSON
                    phase.error(req.kind, type(exc).__name__, str(exc) or repr(exc))
                if settings.think_s:
                    await asyncio.sleep(rng.expovariate(1 / settings.think_s))

        async def sampler() -> None:
            # The first sample, right at the end of the warm-up, is the baseline growth is measured from.
            await asyncio.sleep(max(measure_from - time.monotonic(), 0.0))
            while True:
                value = await sample_rss()
                if value is not None:
                    rss.append((round(time.monotonic() - measure_from, 3), value))
                await asyncio.sleep(settings.rss_interval_s)

        async def reporter() -> None:
            while True:
                await asyncio.sleep(progress_every_s)
                if on_progress is None:
                    continue
                now = time.monotonic()
                in_warmup = now < measure_from
                phase = warmup if in_warmup else measured
                since = start if in_warmup else measure_from
                recent = [v for vs in phase.latencies.values() for v in vs[-200:]]
                on_progress(
                    Progress(
                        elapsed_s=now - start,
                        total_s=settings.warmup_s + settings.seconds,
                        phase="warm-up" if in_warmup else "measuring",
                        requests=phase.requests,
                        errors=warmup.n_errors + measured.n_errors,
                        req_per_s=phase.requests / max(now - since, 1e-9),
                        p50_ms=_ms(recent, 50),
                    )
                )

        background = [asyncio.create_task(sampler()), asyncio.create_task(reporter())]
        try:
            await asyncio.gather(*(client(n) for n in range(settings.clients)))
            finished = time.monotonic()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        last = await sample_rss()  # after the last answer: what the load left behind
        if last is not None:
            rss.append((round(time.monotonic() - measure_from, 3), last))

    every = [v for vs in measured.latencies.values() for v in vs]
    wall = max(finished - measure_from, 1e-9)
    by_kind: dict[str, dict[str, float]] = {}
    for kind in sorted({*measured.latencies, *(key.split(":", 1)[0] for key in measured.errors)}):
        good = measured.latencies.get(kind, [])
        errs = sum(n for key, n in measured.errors.items() if key.split(":", 1)[0] == kind)
        by_kind[kind] = {"n": len(good) + errs, "errors": errs, "p50_ms": _ms(good, 50), "p99_ms": _ms(good, 99)}
    return LoadReport(
        url=settings.url,
        clients=settings.clients,
        seconds=round(wall, 2),
        warmup_s=settings.warmup_s,
        requests=measured.requests,
        errors=measured.n_errors,
        req_per_s=measured.requests / wall,
        p50_ms=_ms(every, 50),
        p90_ms=_ms(every, 90),
        p99_ms=_ms(every, 99),
        max_ms=max(every, default=float("nan")) * 1000,
        by_kind=by_kind,
        error_counts={**{f"{k} (warm-up)": n for k, n in warmup.errors.items()}, **measured.errors},
        error_samples=warmup.samples + measured.samples,
        client_min_requests=min(per_client),
        warmup_requests=warmup.requests,
        warmup_errors=warmup.n_errors,
        rss_source=rss_source,
        rss_start=rss[0][1] if rss else None,
        rss_end=rss[-1][1] if rss else None,
        rss_max=max((v for _, v in rss), default=None),
        rss_samples=rss,
    )


def print_progress(p: Progress) -> None:
    """One line per report on stderr (rewritten in place on a terminal)."""
    line = (
        f"loadtest {p.phase}: {p.elapsed_s:5.0f}/{p.total_s:.0f} s  {p.requests} requests"
        f" ({p.req_per_s:.1f}/s)  errors {p.errors}  p50 {'-' if math.isnan(p.p50_ms) else f'{p.p50_ms:.0f}'} ms"
    )
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{line}   ")
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def write_json(report: LoadReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n")
