"""``prism eval``: retrieval quality and latency of the gateway's search API on a query set.

Metrics (DESIGN.md): nDCG@10 with gain 2^grade - 1 and the ideal ranking from all graded
products; Recall@k = share of grade-2 products in the top k, out of min(k, #grade-2); MRR of the
first grade-2 hit; latency percentiles measured by the client, end to end over HTTP.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import structlog

from prism.catalog import Query
from prism.progress import Progress

log = structlog.get_logger(__name__)

SUPPORTED_KINDS = ("text-en", "text-zh", "image", "image-aug", "video", "similar")


def dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    ideal = dcg(sorted((2.0**g - 1 for g in relevant.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([2.0 ** relevant.get(pid, 0) - 1 for pid in ranked[:k]]) / ideal


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    exact = {pid for pid, g in relevant.items() if g >= 2}
    if not exact:
        return 0.0
    return len(exact.intersection(ranked[:k])) / min(k, len(exact))


def reciprocal_rank(ranked: Sequence[str], relevant: Mapping[str, int]) -> float:
    for i, pid in enumerate(ranked):
        if relevant.get(pid, 0) >= 2:
            return 1.0 / (i + 1)
    return 0.0


@dataclass
class QueryOutcome:
    qid: str
    kind: str
    ranked: list[str]
    latency_ms: float
    error: str | None = None


def summarize(outcomes: Sequence[QueryOutcome], queries: Mapping[str, Query]) -> dict[str, dict[str, float]]:
    by_kind: dict[str, list[QueryOutcome]] = defaultdict(list)
    for o in outcomes:
        by_kind[o.kind].append(o)
    kinds: dict[str, dict[str, float]] = {}
    for kind, outs in sorted(by_kind.items()):
        ok = [o for o in outs if o.error is None]
        rel = [queries[o.qid].relevant for o in ok]
        lat = np.array([o.latency_ms for o in ok]) if ok else np.zeros(1)
        kinds[kind] = {
            "n": len(ok),
            "errors": len(outs) - len(ok),
            "ndcg@10": float(np.mean([ndcg_at_k(o.ranked, r, 10) for o, r in zip(ok, rel, strict=True)]))
            if ok
            else 0.0,
            "recall@1": float(np.mean([recall_at_k(o.ranked, r, 1) for o, r in zip(ok, rel, strict=True)]))
            if ok
            else 0.0,
            "recall@10": float(np.mean([recall_at_k(o.ranked, r, 10) for o, r in zip(ok, rel, strict=True)]))
            if ok
            else 0.0,
            "mrr": float(np.mean([reciprocal_rank(o.ranked, r) for o, r in zip(ok, rel, strict=True)])) if ok else 0.0,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
        }
    return kinds


def restrict_queries(queries: Sequence[Query], ids: Collection[str]) -> list[Query]:
    """The queries as they read over a catalog of only ``ids``: relevance limited to those products;
    a query with no exact match left, or a "similar" query about a product outside, is dropped."""
    out: list[Query] = []
    for q in queries:
        if q.similar_to is not None and q.similar_to not in ids:
            continue
        rel = {pid: g for pid, g in q.relevant.items() if pid in ids}
        if any(g >= 2 for g in rel.values()):
            out.append(dataclasses.replace(q, relevant=rel))
    return out


def context_queries(queries: Sequence[Query], n: int) -> list[tuple[Query, tuple[str, ...]]]:
    """Text queries with ``n`` of their own exact matches taken out as the shopper's recently viewed
    products (chosen by a hash, not by rank) and removed from the relevance they are scored on."""
    out: list[tuple[Query, tuple[str, ...]]] = []
    for q in queries:
        if q.text is None:
            continue
        exact = sorted(
            (pid for pid, g in q.relevant.items() if g >= 2),
            key=lambda pid: hashlib.sha256(f"{q.qid}\0{pid}".encode()).hexdigest(),
        )
        if len(exact) <= n:
            continue  # nothing left to find once the context is held out
        viewed = tuple(exact[:n])
        rest = {pid: g for pid, g in q.relevant.items() if pid not in viewed}
        out.append((dataclasses.replace(q, relevant=rest), viewed))
    return out


def run_query(
    client: httpx.Client, q: Query, k: int = 10, viewed: Sequence[str] = (), rerank: bool | None = None
) -> QueryOutcome:
    t0 = time.perf_counter()
    if q.text is not None:
        body: dict[str, Any] = {"text": q.text, "k": k, "facets": []}
        if viewed:
            body["viewed"] = list(viewed)
        if rerank is not None:
            body["rerank"] = rerank
        r = client.post("/v1/search", json=body)
    elif q.image is not None:
        r = client.post(
            "/v1/search", files={"image": (q.image.name, q.image.read_bytes())}, data={"k": str(k), "facets": ""}
        )
    elif q.video is not None:
        r = client.post(
            "/v1/search", files={"video": (q.video.name, q.video.read_bytes())}, data={"k": str(k), "facets": ""}
        )
    elif q.similar_to is not None:
        r = client.get(f"/v1/products/{q.similar_to}/similar", params={"k": k})
    else:
        return QueryOutcome(q.qid, q.kind, [], 0.0, error="unsupported query kind")
    ms = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        return QueryOutcome(q.qid, q.kind, [], ms, error=f"HTTP {r.status_code}: {r.text[:200]}")
    return QueryOutcome(q.qid, q.kind, [h["id"] for h in r.json()["hits"]], ms)


def evaluate(
    base_url: str,
    queries: Sequence[Query],
    *,
    kinds: Sequence[str] | None = None,
    show_progress: bool = True,
    context: int = 0,
    rerank: str = "server",
) -> dict[str, Any]:
    """Run every query; with ``context`` > 0 also each text query with that many of its own exact
    matches as viewed products, scored (kind ``<kind>+context``) and without them (``<kind>-held``)
    on the relevance that is left: the effect of personal context alone.

    ``rerank``: "server" leaves it to the gateway's default, "on"/"off" force it on text queries,
    "both" runs each text query without and again with it (kind ``<kind>+rerank``)."""
    if rerank not in ("server", "on", "off", "both"):
        raise ValueError(f"rerank must be server, on, off or both, got {rerank!r}")
    forced = {"on": True, "off": False, "both": False}.get(rerank)
    wanted = [q for q in queries if (kinds is None or q.kind in kinds)]
    held = context_queries(wanted, context) if context > 0 else []
    again = [q for q in wanted if q.text is not None] if rerank == "both" else []
    progress = Progress("eval", len(wanted) + len(again) + 2 * len(held), enabled=show_progress)
    outcomes: list[QueryOutcome] = []
    scored: dict[str, Query] = {q.qid: q for q in wanted}
    with httpx.Client(base_url=base_url, timeout=60.0) as client:
        for q in wanted:
            outcomes.append(run_query(client, q, rerank=forced if q.text is not None else None))
            progress.update()
        for q in again:
            qid = f"{q.kind}+rerank-{q.qid.rsplit('-', 1)[-1]}"
            o = run_query(client, q, rerank=True)
            outcomes.append(dataclasses.replace(o, qid=qid, kind=f"{q.kind}+rerank"))
            scored[qid] = q
            progress.update()
        for q, viewed in held:
            for suffix, ctx in (("-held", ()), ("+context", viewed)):
                qid = f"{q.kind}{suffix}-{q.qid.rsplit('-', 1)[-1]}"
                o = run_query(client, q, viewed=ctx, rerank=forced)
                outcomes.append(dataclasses.replace(o, qid=qid, kind=f"{q.kind}{suffix}"))
                scored[qid] = q
                progress.update()
    progress.close()
    failed = [o for o in outcomes if o.error]
    for o in failed[:5]:
        log.warning("eval.query_failed", qid=o.qid, error=o.error)
    return {"kinds": summarize(outcomes, scored)}


def format_table(result: Mapping[str, Any]) -> str:
    cols = ["n", "ndcg@10", "recall@1", "recall@10", "mrr", "p50_ms", "p99_ms"]
    lines = [f"{'kind':<10}" + "".join(f"{c:>11}" for c in cols)]
    for kind, m in result["kinds"].items():
        cells = [
            f"{int(m[c]):>11d}" if c == "n" else f"{m[c]:>11.3f}" if "ms" not in c else f"{m[c]:>11.1f}" for c in cols
        ]
        lines.append(f"{kind:<10}" + "".join(cells))
    return "\n".join(lines)


def write_json(result: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
