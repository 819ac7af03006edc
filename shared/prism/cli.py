"""The ``prism`` command: demo, ingest, eval, serve, loadtest (DESIGN.md "Command line")."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

import structlog

from prism import tracing
from prism.catalog import STRIP_MODES, Catalog, read_queries
from prism.logs import setup_logging
from prism.models.precision import PRECISIONS
from prism.settings import CommonSettings

log = structlog.get_logger("prism")

SERVICES = {
    "text-encoder": "services.text_encoder.__main__",
    "image-encoder": "services.image_encoder.__main__",
    "video-encoder": "services.video_encoder.__main__",
    "gateway": "services.gateway.__main__",
    "fusion": "services.fusion.__main__",
    "ingest": "services.ingest.__main__",
}


def _offline() -> None:
    # Weights come from installed packages only; never let a library reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _catalog(path: Path | None, common: CommonSettings) -> Catalog:
    path = path or common.data_dir / "catalogs" / "hm"
    try:
        return Catalog.open(path)
    except FileNotFoundError:
        sys.exit(
            f"prism: no catalog at {path} (expected products.jsonl there).\n"
            f"Point --catalog at a catalog folder, or set PRISM_DATA_DIR to the folder holding catalogs/ "
            f"(default ../shared/data, beside the repository)."
        )


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def cmd_demo(args: argparse.Namespace, common: CommonSettings) -> int:
    from prism.embedded import start_suite

    catalog = _catalog(args.catalog, common)
    index_path = args.index or common.var_dir / "index" / catalog.name
    suite = start_suite(common=common, index_path=index_path, http_port=args.port)
    try:
        # The same event-driven path as production: folder store, S3 events, Celery worker thread.
        report = suite.submit(catalog, store_root=common.var_dir / "store" / catalog.name, limit=args.limit)
        print(f"ingested {catalog.root}: {report.summary()}", flush=True)
        print(
            f"\nPrism is serving {suite.gateway.core.index.count()} products at {suite.url}  (Ctrl-C to stop)\n"
            f"  curl -s {suite.url}/v1/search -H 'content-type: application/json' \\\n"
            f'       -d \'{{"text": "blue dress", "k": 5}}\'\n'
            f"  curl -s {suite.url}/v1/search -F image=@photo.jpg\n",
            flush=True,
        )
        _wait_for_signal()
    finally:
        suite.stop()
    return 0


def _print_run(summary: dict[str, object], failed: list[tuple[str, str, str]]) -> None:
    print(
        f"indexed {summary['indexed']}, unchanged {summary['unchanged']}, deleted {summary['deleted']}, "
        f"failed {summary['failed']} in {summary['seconds']} s"
    )
    for pid, code, reason in failed[:50]:
        print(f"  failed {pid}: {code}: {reason}")


def cmd_ingest(args: argparse.Namespace, common: CommonSettings) -> int:
    """Embedded unless PRISM_INGEST_BROKER_URL names a broker: then upload to the configured store
    (PRISM_STORE_*), publish events and follow the remote workers."""
    import json

    from services.ingest.settings import Settings as IngestSettings

    ingest = IngestSettings()
    remote = "PRISM_INGEST_BROKER_URL" in os.environ and not ingest.broker_url.startswith("memory://")
    if args.action == "status":
        if not remote:
            sys.exit("prism ingest status: set PRISM_INGEST_BROKER_URL to the broker the workers use")
        from services.ingest.app import create_app
        from services.ingest.submit import queue_status

        print(json.dumps(queue_status(create_app(ingest)), indent=2, ensure_ascii=False))
        return 0
    if args.catalog is None:
        sys.exit("prism ingest: --catalog DIR is required")
    catalog = _catalog(args.catalog, common)
    if remote:
        from prism.storage import StoreSettings, open_store
        from services.ingest.app import create_app
        from services.ingest.submit import submit_catalog

        store = open_store(StoreSettings())
        ensure = getattr(store, "ensure_bucket", None)
        if callable(ensure):
            ensure()
        run = submit_catalog(create_app(ingest), store, catalog, prune=args.prune, limit=args.limit)
        _print_run(run.summary(), run.failed)
        return 0 if not run.failed and not run.missing else 1
    from prism.embedded import start_suite

    index_path = args.index or common.var_dir / "index" / catalog.name
    with start_suite(common=common, index_path=index_path, http_port=0) as suite:
        if args.strip != "none":  # stripping is an evaluation tool: the library path does it
            report = suite.ingest(catalog, strip=args.strip, prune=args.prune, limit=args.limit)
            _print_run(report.summary(), report.failed)
            return 0 if not report.failed else 1
        store_root = common.var_dir / "store" / catalog.name
        run = suite.submit(catalog, store_root=store_root, prune=args.prune, limit=args.limit)
    _print_run(run.summary(), run.failed)
    return 0 if not run.failed and not run.missing else 1


def cmd_seed(args: argparse.Namespace, common: CommonSettings) -> int:
    """Distributed smoke test: ingest a few products through the broker, then query the gateway."""
    import json
    from itertools import islice

    from prism.storage import StoreSettings, open_store
    from services.ingest.app import create_app
    from services.ingest.seed import smoke_queries
    from services.ingest.settings import Settings as IngestSettings
    from services.ingest.submit import submit_catalog

    catalog = _catalog(args.catalog, common)
    store = open_store(StoreSettings())
    ensure = getattr(store, "ensure_bucket", None)
    if callable(ensure):
        ensure()
    run = submit_catalog(create_app(IngestSettings()), store, catalog, limit=args.limit)
    print(json.dumps(run.summary()), flush=True)
    products = [p for p in islice(catalog.products(), args.limit) if p.id in run.outcomes][: args.queries]
    result = smoke_queries(args.gateway, catalog, products, api_key=os.environ.get("PRISM_SEED_API_KEY", ""))
    print(json.dumps(result.summary()), flush=True)
    return 0 if result.ok and not run.missing else 1


def _set_precisions(args: argparse.Namespace) -> dict[str, str]:
    """``--text-precision`` / ``--image-precision`` as the encoders' own settings (the embedded
    services read them from the environment, as a deployment does); returns what they will run."""
    from services.image_encoder.settings import Settings as ImageSettings
    from services.text_encoder.settings import Settings as TextSettings

    if args.text_precision:
        os.environ["PRISM_TEXT_ENCODER_PRECISION"] = args.text_precision
    if args.image_precision:
        os.environ["PRISM_IMAGE_ENCODER_PRECISION"] = args.image_precision
    # the video encoder runs the image network with the image encoder's precision
    return {"text": TextSettings().precision, "image": ImageSettings().precision}


def cmd_eval(args: argparse.Namespace, common: CommonSettings) -> int:
    from prism.embedded import start_suite
    from prism.evaluation import SUPPORTED_KINDS, evaluate, format_table, restrict_queries, write_json

    catalog = _catalog(args.catalog, common)
    queries = read_queries(args.queries)
    kinds = args.kinds.split(",") if args.kinds else list(SUPPORTED_KINDS)
    only: set[str] | None = None
    if args.unseen:
        if common.models_dir is None:
            raise SystemExit("prism eval: --unseen needs --models (a version trained with --test-fraction)")
        from prism.training.train import read_test_split

        split = read_test_split(common.models_dir)
        if catalog.name not in split:
            raise SystemExit(f"prism eval: the models hold out no products of catalog {catalog.name!r}")
        only = split[catalog.name]
        n_all = len(queries)
        queries = restrict_queries(queries, only)
        print(f"unseen products only: {len(only)} products, {len(queries)} of {n_all} queries keep a match")
    precision = _set_precisions(args)
    print(f"encoder precision: text {precision['text']}, image and video {precision['image']}", flush=True)
    with start_suite(common=common, index_path=None, http_port=0) as suite:
        report = suite.ingest(catalog, strip=args.strip, only=only)
        print(f"indexed {catalog.name} (strip={args.strip}): {report.summary()}", flush=True)
        result = evaluate(suite.url, queries, kinds=kinds, context=args.context, rerank=args.rerank)
    result.update(
        {
            "rerank": args.rerank,
            "catalog": str(catalog.root),
            "queries": str(args.queries),
            "strip": args.strip,
            "models": str(args.models) if args.models else None,
            "unseen_only": bool(args.unseen),
            "precision": precision,
            "skipped_kinds": sorted({q.kind for q in queries} - set(kinds)),
        }
    )
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def cmd_loadtest(args: argparse.Namespace, common: CommonSettings) -> int:
    """N concurrent clients for D seconds against a running gateway; exit 1 on any error."""
    import asyncio

    import httpx

    from prism.loadtest import LoadSettings, Mix, Workload, print_progress, run_load, write_json

    flags = {
        "url": args.url,
        "clients": args.clients,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "timeout_s": args.timeout,
        "think_s": args.think,
    }
    # Flags given override PRISM_LOADTEST_* (the API key only comes from there: argv is visible in ps).
    settings = LoadSettings(**{k: v for k, v in flags.items() if v is not None})
    queries = args.queries or common.data_dir / "catalogs" / "myntra-queries.jsonl"
    if not queries.is_file():
        sys.exit(f"prism loadtest: no query set at {queries}; pass --queries FILE (DESIGN.md query-set format)")
    mix = Mix.parse(args.mix) if args.mix else Mix()
    workload = Workload.from_queries(queries)
    try:
        report = asyncio.run(
            run_load(settings, workload, mix=mix, rss_pid=args.pid, on_progress=None if args.quiet else print_progress)
        )
    except (httpx.HTTPError, RuntimeError, ValueError) as exc:  # before the load: gateway down, nothing indexed
        sys.exit(f"prism loadtest: {settings.url}: {type(exc).__name__}: {exc}")
    print(report.summary(), flush=True)
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0 if report.errors == 0 and report.warmup_errors == 0 else 1


def cmd_serve(args: argparse.Namespace, common: CommonSettings) -> int:
    import importlib

    module = importlib.import_module(SERVICES[args.service])
    module.main()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prism", description="Prism cross-modal product search")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="everything embedded: ingest a catalog, serve search and the web page")
    p.add_argument("--catalog", type=Path, help="catalog folder (default: $PRISM_DATA_DIR/catalogs/hm)")
    p.add_argument("--port", type=int, default=int(os.environ.get("PRISM_GATEWAY_HTTP_PORT", "8080")))
    p.add_argument("--index", type=Path, help="embedded index folder (default var/index/<catalog>)")
    p.add_argument("--limit", type=int, help="ingest only the first N products")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("ingest", help="index a catalog through the event-driven ingestion path; `status`: queues")
    p.add_argument("action", nargs="?", choices=("run", "status"), default="run")
    p.add_argument("--catalog", type=Path)
    p.add_argument("--models", type=Path, help="trained models folder")
    p.add_argument("--index", type=Path)
    p.add_argument("--strip", choices=STRIP_MODES, default="none")
    p.add_argument("--prune", action="store_true", help="delete indexed products no longer in the catalog")
    p.add_argument("--limit", type=int)
    p.set_defaults(fn=cmd_ingest)

    p = sub.add_parser("seed", help="smoke-test a distributed deployment: ingest a few products, query the gateway")
    p.add_argument("--catalog", type=Path, required=True)
    p.add_argument("--limit", type=int, default=100, help="products to ingest")
    p.add_argument("--queries", type=int, default=10, help="products to look up by title and by photo")
    p.add_argument("--gateway", default=os.environ.get("PRISM_SEED_GATEWAY", "http://gateway:8080"))
    p.set_defaults(fn=cmd_seed)

    p = sub.add_parser("eval", help="index a catalog into a fresh index and measure retrieval on a query set")
    p.add_argument("--catalog", type=Path, required=True)
    p.add_argument("--queries", type=Path, required=True)
    p.add_argument("--models", type=Path, help="trained models folder")
    p.add_argument("--json", type=Path, help="write the metrics as JSON here")
    p.add_argument(
        "--strip",
        choices=STRIP_MODES,
        default="none",
        help="photo: index photos only; title-photo: title and photo; none: the full product",
    )
    p.add_argument("--kinds", help="comma-separated query kinds (default: all supported)")
    p.add_argument(
        "--context",
        type=int,
        default=0,
        help="also run text queries with N of their own matches as the shopper's viewed products (held out)",
    )
    p.add_argument(
        "--unseen",
        action="store_true",
        help="index and score only the products the models never trained on (prism train --test-fraction)",
    )
    p.add_argument(
        "--rerank",
        choices=("server", "on", "off", "both"),
        default="server",
        help="text queries with the reranker as the server decides, forced on or off, or both "
        "(each text kind twice: without, and as <kind>+rerank with)",
    )
    p.add_argument(
        "--text-precision",
        choices=PRECISIONS,
        help="text encoder precision (default: $PRISM_TEXT_ENCODER_PRECISION, else fp32)",
    )
    p.add_argument(
        "--image-precision",
        choices=PRECISIONS,
        help="image and video encoder precision (default: $PRISM_IMAGE_ENCODER_PRECISION, else fp32)",
    )
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("loadtest", help="N concurrent clients for D seconds against a gateway's HTTP API")
    p.add_argument("--url", help="gateway base URL (default $PRISM_LOADTEST_URL or http://127.0.0.1:8080)")
    p.add_argument("--clients", type=int, help="concurrent clients (default 50)")
    p.add_argument("--seconds", type=float, help="measured duration after the warm-up (default 60)")
    p.add_argument("--warmup", type=float, help="warm-up seconds, counted apart (default 10)")
    p.add_argument("--timeout", type=float, help="per-request timeout in seconds; slower is an error (default 30)")
    p.add_argument("--think", type=float, help="mean think time between a client's requests, seconds (default 0)")
    p.add_argument("--queries", type=Path, help="query set for texts and photos (default: the Myntra query set)")
    p.add_argument("--mix", help="request weights, e.g. text_en=0.3,text_zh=0.15,photo=0.1,video=0.02")
    p.add_argument("--pid", type=int, help="sample this local process's RSS instead of the gateway's /metrics")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(fn=cmd_loadtest)

    # `prism train ...` is handed whole to prism.training.train (its own options and --help); listed here for help.
    sub.add_parser("train", help="learn the image->text projection on catalogs' (photo, text) pairs", add_help=False)

    p = sub.add_parser("serve", help="run one service (for docker-compose / helm)")
    p.add_argument("service", choices=sorted(SERVICES))
    p.set_defaults(fn=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    _offline()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        from prism.training.train import main as train_main

        setup_logging(CommonSettings().log_level, CommonSettings().log_format)
        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    common = CommonSettings()
    if args.command != "serve":
        setup_logging(common.log_level, common.log_format)
        tracing.setup_tracing("prism")  # exported only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    if getattr(args, "models", None) is not None:
        os.environ["PRISM_MODELS_DIR"] = str(args.models)
        common = CommonSettings()
    return int(args.fn(args, common))


if __name__ == "__main__":
    sys.exit(main())
