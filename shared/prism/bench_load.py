"""``make bench``: the embedded suite under load (``prism loadtest``) with a real catalog slice indexed.

The suite runs in this process; the load generator runs in a child process (``prism loadtest``), so
it neither competes with the server for the GIL nor counts towards the server's memory, which the
generator samples from the gateway's ``/metrics``. Prints clients, requests, req/s, p50/p99, errors
and the server's RSS at the end of the warm-up and at the end; writes ``load.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prism.catalog import Catalog
from prism.logs import setup_logging
from prism.settings import CommonSettings


def run_loadtest_process(
    url: str,
    json_path: Path,
    *,
    clients: int,
    seconds: float,
    warmup: float,
    timeout: float = 30.0,
    extra: tuple[str, ...] = (),
) -> tuple[int, dict[str, Any]]:
    """Run ``prism loadtest`` in a child process against ``url``; its exit code and JSON report
    (written to ``json_path``). Progress and the summary go to this process's stdout/stderr."""
    json_path.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "prism.cli",
        "loadtest",
        "--url",
        url,
        "--clients",
        str(clients),
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
        "--timeout",
        str(timeout),
        "--json",
        str(json_path),
        *extra,
    ]
    # Bounded: warm-up + measured phase + the last requests' timeout + start-up and discovery.
    done = subprocess.run(cmd, env=os.environ.copy(), timeout=warmup + seconds + timeout + 120, check=False)
    if not json_path.is_file():
        raise RuntimeError(f"prism loadtest exited {done.returncode} without a report")
    return done.returncode, json.loads(json_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    parser.add_argument("--catalog", type=Path, help="default: $PRISM_DATA_DIR/catalogs/myntra")
    parser.add_argument("--queries", type=Path, help="query set of texts and photos (default: <catalog>-queries.jsonl)")
    parser.add_argument("--products", type=int, default=1000, help="the slice of the catalog to index")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    common = CommonSettings()
    setup_logging("WARNING", common.log_format)
    catalog = Catalog.open(args.catalog or common.data_dir / "catalogs" / "myntra")
    queries = args.queries or catalog.root.parent / f"{catalog.name}-queries.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)

    from prism.embedded import start_suite

    with start_suite(common=common, index_path=None, http_port=0, collection="bench-load") as suite:
        report = suite.ingest(catalog, limit=args.products)
        print(f"indexed {catalog.name}: {report.summary()}", flush=True)
        indexed = suite.gateway.core.index.count()
        code, result = run_loadtest_process(
            suite.url,
            args.out / "load.json",
            clients=args.clients,
            seconds=args.seconds,
            warmup=args.warmup,
            extra=("--queries", str(queries)),
        )
    mib = 2**20
    rss = (
        f"RSS start {result['rss_start'] / mib:.0f} MiB, end {result['rss_end'] / mib:.0f} MiB "
        f"({result['rss_growth']:+.1%})"
        if result.get("rss_start") and result.get("rss_end") is not None
        else "RSS n/a"
    )
    print(
        f"\nload: {result['clients']} clients, {result['seconds']:.0f} s, {result['requests']} requests, "
        f"{result['req_per_s']:.1f} req/s, p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, "
        f"errors {result['errors']} (warm-up {result['warmup_errors']}), {rss}"
    )
    result["indexed_products"] = indexed
    result["machine"] = {"cpus": os.cpu_count()}
    (args.out / "load.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'load.json'}")
    if code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
