"""``python -m prism.bench_ann``: approximate search on the edge index against exact search, one run.

Builds an ``EdgeProductIndex`` over ``--n`` synthetic, embedding-like unit vectors and measures, on
held-out queries, in the same process and on the same machine state:

- ANN latency (p50/p99) through ``EdgeProductIndex.search`` (the serving path, payload included)
  and recall@10 against exact top-10, for a few ``hnsw_ef`` values;
- exact search latency: brute-force float32 matmul + partial sort over all ``n`` vectors in numpy;
- exact search in qdrant-client local mode (what ``ProductIndex`` does embedded) at ``--local-n``
  points, extrapolated linearly to ``n`` (labelled as such) unless ``--local-n`` equals ``n``.

Data: ``--clusters`` random unit centres; each point is a centre plus low-rank noise (64 shared
directions with a decaying spectrum, as real embeddings have few effective dimensions) plus a
little isotropic noise, normalised.  Everything is seeded, so two runs see the same vectors.
Vectors are generated and upserted in chunks; only the float32 matrix for the exact baseline
(n × dim × 4 bytes: 1.5 GB at 1M × 384) is held in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

NOISE_RANK = 64


class Generator:
    """Clustered unit vectors, chunk by chunk, reproducible from (seed, chunk)."""

    def __init__(self, dim: int, clusters: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.seed = seed
        self.centres = _unit(rng.standard_normal((clusters, dim)).astype(np.float32))
        self.basis = _unit(rng.standard_normal((NOISE_RANK, dim)).astype(np.float32))
        spectrum = 1.0 / np.sqrt(np.arange(1, NOISE_RANK + 1, dtype=np.float32))
        self.spectrum = spectrum / np.linalg.norm(spectrum)

    def chunk(self, size: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        """``size`` vectors and their cluster labels from stream ``stream`` (chunk index, or -1 for queries)."""
        rng = np.random.default_rng([self.seed, stream + 1])
        labels = rng.integers(0, len(self.centres), size)
        low_rank = (rng.standard_normal((size, NOISE_RANK)).astype(np.float32) * self.spectrum) @ self.basis
        iso = rng.standard_normal((size, self.dim)).astype(np.float32) / np.sqrt(self.dim)
        return _unit(self.centres[labels] + 0.6 * low_rank + 0.35 * iso), labels


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def _ms(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.median(arr)), 3), "p99_ms": round(float(np.percentile(arr, 99)), 3)}


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, block: int = 100_000) -> np.ndarray:
    """Exact top-k rows by dot product (cosine on unit vectors), blockwise to bound memory."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), block):
        sims = queries @ vectors[start : start + block].T
        top = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(sims, top, axis=1)], axis=1)
        best_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, axis=1), np.take_along_axis(best_i, keep, axis=1)
    return best_i


def exact_numpy_latency(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[float]:
    """One query at a time, as a serving process would: matvec over all vectors + partial sort."""
    out = []
    for q in queries:
        t0 = time.perf_counter()
        sims = vectors @ q
        top = np.argpartition(-sims, k)[:k]
        _ = top[np.argsort(-sims[top])]
        out.append(time.perf_counter() - t0)
    return out


def local_mode_latency(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[list[float], float]:
    """Exact search in qdrant-client local mode (ProductIndex embedded, in memory); returns latencies, upsert s."""
    from prism.index import IndexSettings, ProductIndex

    index = ProductIndex.open(IndexSettings(collection="bench-local"))
    index.ensure_collection({"v": vectors.shape[1]}, indexed_attributes=())
    t0 = time.perf_counter()
    for start in range(0, len(vectors), 10_000):
        index.upsert([(f"p{i}", {"v": vectors[i]}, {}) for i in range(start, min(start + 10_000, len(vectors)))])
    upsert_s = time.perf_counter() - t0
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        index.search("v", q, limit=k, with_payload=["product_id"])
        lat.append(time.perf_counter() - t0)
    index.close()
    return lat, upsert_s


def run(args: argparse.Namespace) -> dict[str, Any]:
    from prism.edge_index import EdgeProductIndex, EdgeTuning
    from prism.index import IndexSettings

    n, dim, k = args.n, args.dim, 10
    gen = Generator(dim, args.clusters, args.seed)
    out = Path(args.out)
    folder = out / f"ann-index-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    # Auto-build off: one optimize() after the bulk load, so its time is the build time.
    tuning = EdgeTuning(m=args.m, ef_construct=args.ef_construct, hnsw_ef=args.ef, auto_optimize_points=0)
    index = EdgeProductIndex.open(IndexSettings(collection="bench", path=folder, engine="edge"), tuning)
    index.ensure_collection({"v": dim}, indexed_attributes=("category",))

    vectors = np.empty((n, dim), dtype=np.float32)
    t0 = time.perf_counter()
    for c, start in enumerate(range(0, n, args.chunk)):
        size = min(args.chunk, n - start)
        chunk, labels = gen.chunk(size, c)
        vectors[start : start + size] = chunk
        index.upsert(
            [
                (
                    f"p{start + i}",
                    {"v": chunk[i]},
                    {"price": float(labels[i] % 100), "attributes": {"category": f"c{labels[i] % 50}"}},
                )
                for i in range(size)
            ]
        )
        print(f"upserted {start + size:,}/{n:,}  {time.perf_counter() - t0:.0f}s", flush=True)
    upsert_s = time.perf_counter() - t0
    print(f"building HNSW (m={args.m}, ef_construct={args.ef_construct}) ...", flush=True)
    t0 = time.perf_counter()
    index.optimize()
    build_s = time.perf_counter() - t0
    print(f"built in {build_s:.0f}s", flush=True)

    queries, _ = gen.chunk(args.queries, -1)
    truth = exact_topk(vectors, queries, k)
    truth_sets = [{f"p{i}" for i in row} for row in truth]

    sweep: dict[str, dict[str, float]] = {}
    for ef in sorted({*args.sweep, args.ef}):
        index.tuning = replace(tuning, hnsw_ef=ef)
        for q in queries[:10]:  # warm caches and the engine's search pool
            index.search("v", q, limit=k, with_payload=["product_id"])
        lat, recalls = [], []
        for q, want in zip(queries, truth_sets, strict=True):
            t0 = time.perf_counter()
            hits = index.search("v", q, limit=k, with_payload=["product_id"])
            lat.append(time.perf_counter() - t0)
            recalls.append(len({h.product_id for h in hits} & want) / k)
        sweep[str(ef)] = {**_ms(lat), "recall_at_10": round(float(np.mean(recalls)), 4)}
        print(f"ef={ef}: {sweep[str(ef)]}", flush=True)
    index.tuning = tuning

    exact = _ms(exact_numpy_latency(vectors, queries[: args.exact_queries], k))
    print(f"exact numpy over {n:,}: {exact}", flush=True)
    local_n = min(args.local_n, n)
    local_lat, local_upsert_s = local_mode_latency(vectors[:local_n], queries[: args.exact_queries], k)
    local = _ms(local_lat)
    local_at_n = {key: round(v * n / local_n, 1) for key, v in local.items()}
    print(f"qdrant-client local mode exact at {local_n:,}: {local}", flush=True)

    chosen = sweep[str(args.ef)]
    result: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "clusters": args.clusters,
        "queries": args.queries,
        "engine": "qdrant-edge-py (EdgeProductIndex)",
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "hnsw": {"m": args.m, "ef_construct": args.ef_construct, "ef": args.ef},
        "upsert_s": round(upsert_s, 1),
        "build_s": round(build_s, 1),
        "ann": chosen,
        "ann_ef_sweep": sweep,
        "exact_numpy": {**exact, "queries": args.exact_queries},
        "local_mode_exact": {
            "measured_n": local_n,
            **local,
            "upsert_s": round(local_upsert_s, 1),
            ("measured_at_n" if local_n == n else "extrapolated_linearly_to_n"): local_at_n,
        },
        "speedup_vs_exact_numpy_p50": round(exact["p50_ms"] / chosen["p50_ms"], 1),
        "speedup_vs_local_mode_p50": round(local_at_n["p50_ms"] / chosen["p50_ms"], 1),
    }
    index.close()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m prism.bench_ann", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-queries", type=int, default=100, help="queries timed for the exact baselines")
    ap.add_argument("--local-n", type=int, default=100_000, help="points for the qdrant-client local-mode baseline")
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construct", type=int, default=128)
    ap.add_argument("--ef", type=int, default=64, help="hnsw_ef reported as the result")
    ap.add_argument("--sweep", type=lambda s: [int(x) for x in s.split(",") if x], default=[32, 64, 128])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="var/bench")
    ap.add_argument("--keep", action="store_true", help="keep the index folder under --out")
    args = ap.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = run(args)
    ann = result["ann"]
    print(
        f"\nn={result['n']:,} dim={result['dim']}  build {result['build_s']}s  "
        f"ANN p50 {ann['p50_ms']} ms p99 {ann['p99_ms']} ms recall@10 {ann['recall_at_10']}  "
        f"exact numpy p50 {result['exact_numpy']['p50_ms']} ms  speedup {result['speedup_vs_exact_numpy_p50']}x"
    )
    path = Path(args.out) / "ann.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
