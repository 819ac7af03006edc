"""``make bench`` part: end-to-end ingestion throughput vs the bare image encoder, in one run.

The whole path is the production one on real servers: upload to SeaweedFS (S3, minio SDK), S3 event
records through RabbitMQ, Celery worker *processes* that download the photos, call the text and
image encoder services over gRPC and upsert through the fusion service.  Vector caches are off so
every photo is encoded.  Throughput (products/s, from the first upload to the last outcome)
with 1 and 2 workers is printed as a ratio of the bare image encoder's products/s (the model
in-process, no gRPC, same photos, same views) measured in the same run, and as a ratio of both bare
models (image, then the product's text), which is the model work each product needs.  CPU seconds
per process and how busy each model was show where the time went.

``--topology processes`` (the default) runs the encoders and the fusion service as their own
processes, one per service as deployed (``python -m services.<name>``); ``inprocess`` serves all
three from this process, where their Python threads share one interpreter lock with the uploader.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prism.catalog import Catalog
from prism.devservers import REPO_ROOT, SeaweedFS, ensure_rabbitmq, free_port
from prism.grpc_server import GrpcService, wait_until_serving
from prism.logs import setup_logging
from prism.models.precision import Precision
from prism.settings import CommonSettings


def _slice(src: Catalog, out: Path, n: int) -> Catalog:
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for p in src.products():
        if not p.images:
            continue
        for rel in p.images:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src.media_path(rel), out / rel)
        lines.append(json.dumps(p.to_record()))
        if len(lines) == n:
            break
    (out / "products.jsonl").write_text("\n".join(lines) + "\n")
    return Catalog.open(out)


Topology = Literal["processes", "inprocess"]


@dataclass
class _Path:
    """The services a run sends products through, and how to read their work afterwards."""

    text_address: str
    image_address: str
    fusion_address: str
    counters: Callable[[], dict[str, float]]
    # process name -> pids, for CPU seconds; "this_process" is read with time.process_time()
    pids: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class _ServiceProcess:
    name: str
    proc: subprocess.Popen[bytes]
    address: str
    metrics_url: str

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _common_env(common: CommonSettings) -> dict[str, str]:
    """``common`` as the environment of a child service: it loads the same weights and heads as this process."""
    out = {}
    for name, value in common.model_dump().items():
        if value is not None and not name.startswith("log_"):
            out[f"PRISM_{name.upper()}"] = str(value.resolve() if isinstance(value, Path) else value)
    return out


def _start_service(
    name: str, module: str, prefix: str, env: dict[str, str], log_dir: Path, common: CommonSettings
) -> _ServiceProcess:
    port, metrics_port = free_port(), free_port()
    full_env = {
        **os.environ,
        **_common_env(common),
        **{prefix + k: v for k, v in env.items()},
        prefix + "PORT": str(port),
        prefix + "METRICS_PORT": str(metrics_port),
        "PRISM_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO_ROOT),
    }
    with (log_dir / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module], env=full_env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    service = _ServiceProcess(name, proc, f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics")
    try:
        wait_until_serving(service.address, timeout=300)
    except TimeoutError:
        service.stop()
        raise RuntimeError(f"{name} did not start serving; see {log_dir / (name + '.log')}") from None
    return service


def _scrape(url: str) -> dict[tuple[str, str], float]:
    """(sample name, its ``service`` label) -> value, for every sample of a service's ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {
        (sample.name, sample.labels.get("service", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _service_counters(image_metrics: str, text_metrics: str) -> dict[str, float]:
    image, text = _scrape(image_metrics), _scrape(text_metrics)
    return {
        "image_busy_s": image.get(("prism_model_busy_seconds_total", "image-encoder"), 0.0),
        "image_batches": image.get(("prism_batch_size_count", "image-encoder"), 0.0),
        "image_items": image.get(("prism_batch_size_sum", "image-encoder"), 0.0),
        "text_busy_s": text.get(("prism_model_busy_seconds_total", "text-encoder"), 0.0),
    }


@contextmanager
def _encoder_processes(
    tmp: Path, text_precision: Precision, common: CommonSettings
) -> Iterator[tuple[_ServiceProcess, _ServiceProcess]]:
    with ExitStack() as stack:
        image = _start_service(
            "image-encoder", "services.image_encoder", "PRISM_IMAGE_ENCODER_", {"CACHE_VECTORS": "false"}, tmp, common
        )
        stack.callback(image.stop)
        text = _start_service(
            "text-encoder",
            "services.text_encoder",
            "PRISM_TEXT_ENCODER_",
            {"CACHE_VECTORS": "false", "PRECISION": text_precision},
            tmp,
            common,
        )
        stack.callback(text.stop)
        yield image, text


@contextmanager
def _fusion_process(
    tmp: Path,
    tag: str,
    image: _ServiceProcess,
    text: _ServiceProcess,
    pids: dict[str, list[int]],
    common: CommonSettings,
) -> Iterator[_Path]:
    fusion = _start_service(
        f"fusion-{tag}",
        "services.fusion",
        "PRISM_FUSION_",
        {
            "TEXT_ENCODER_ADDRESS": text.address,
            "IMAGE_ENCODER_ADDRESS": image.address,
            "INDEX_PATH": str(tmp / f"index-{tag}"),
            "COLLECTION": f"bench-{tag}",
            "LEXICAL_STATS": str(tmp / f"lexical-{tag}.json"),
        },
        tmp,
        common,
    )
    try:
        yield _Path(
            text.address,
            image.address,
            fusion.address,
            functools.partial(_service_counters, image.metrics_url, text.metrics_url),
            {**pids, "image_encoder": [image.proc.pid], "text_encoder": [text.proc.pid], "fusion": [fusion.proc.pid]},
        )
    finally:
        fusion.stop()


@contextmanager
def _fusion_inprocess(
    tag: str,
    img_service: GrpcService,
    txt_service: GrpcService,
    counters: Callable[[], dict[str, float]],
    pids: dict[str, list[int]],
) -> Iterator[_Path]:
    from services.fusion import model as fusion_model
    from services.fusion.server import FusionServicer, fusion_grpc_service
    from services.fusion.settings import Settings as FusionSettings

    fs = FusionSettings(
        port=0,
        text_encoder_address=txt_service.address,
        image_encoder_address=img_service.address,
        index_path=None,
        collection=f"bench-{tag}",
        lexical_stats=None,
    )
    fusion = fusion_grpc_service(FusionServicer(functools.partial(fusion_model.load, fs), 256), fs)
    fusion.start()
    fusion.warm()
    try:
        yield _Path(txt_service.address, img_service.address, fusion.address, counters, dict(pids))
    finally:
        fusion.stop(grace=0)


def bench_ingest(
    common: CommonSettings,
    catalog: Catalog,
    n: int,
    worker_counts: tuple[int, ...],
    text_precision: Precision = "fp32",
    topology: Topology = "processes",
) -> dict[str, Any]:
    from prism.media.images import decode_image
    from services.image_encoder.server import build_service as build_image
    from services.image_encoder.settings import Settings as ImageSettings
    from services.text_encoder.server import build_service as build_text
    from services.text_encoder.settings import Settings as TextSettings

    broker = ensure_rabbitmq()
    tmp = Path(tempfile.mkdtemp(prefix="prism-bench-ingest-"))
    seaweed = SeaweedFS.start(tmp / "seaweed")
    # The bare references run these models in this process; with topology "inprocess" the path
    # uses them too (served over gRPC from here), otherwise they idle while the path runs.
    img_service, img_servicer = build_image(ImageSettings(port=0, metrics_port=0, cache_vectors=False), common)
    txt_service, txt_servicer = build_text(
        TextSettings(port=0, metrics_port=0, cache_vectors=False, precision=text_precision), common
    )
    for service in (img_service, txt_service):
        service.start()
        service.warm()
    stack = ExitStack()
    # The image encoder stays fp32 on both sides: the path's image work equals the bare reference.
    out: dict[str, Any] = {
        "products": n,
        "catalog": str(catalog.root),
        "text_precision": text_precision,
        "topology": topology,
        "runs": {},
    }
    try:
        beam = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True).stdout.split()
        base_pids = {"seaweedfs": [seaweed.proc.pid], "rabbitmq": [int(p) for p in beam]}
        if topology == "processes":
            image_proc, text_proc = stack.enter_context(_encoder_processes(tmp, text_precision, common))

            def open_path(tag: str) -> AbstractContextManager[_Path]:
                return _fusion_process(tmp, tag, image_proc, text_proc, base_pids, common)
        else:
            local = functools.partial(_batcher_counters, img_servicer, txt_servicer)

            def open_path(tag: str) -> AbstractContextManager[_Path]:
                return _fusion_inprocess(tag, img_service, txt_service, local, base_pids)

        data = _slice(catalog, tmp / "catalog", n)
        photos = [data.media_path(p.images[0]).read_bytes() for p in data.products()]
        backend = img_servicer.backend

        bare_cores: list[float] = []

        def bare() -> float:
            t0, cpu0 = time.perf_counter(), time.process_time()
            for i in range(0, len(photos), 32):
                backend.run([decode_image(b) for b in photos[i : i + 32]])
            wall = time.perf_counter() - t0
            # cores the bare encoder kept busy: the path's whole machine is measured against this
            bare_cores.append(round((time.process_time() - cpu0) / wall, 2))
            return len(photos) / wall

        texts = [p.text() for p in data.products()]
        text_backend = txt_servicer.backend

        def bare_text() -> float:
            t0 = time.perf_counter()
            for i in range(0, len(texts), 64):
                text_backend.run([("passage", t) for t in texts[i : i + 64]])
            return len(texts) / (time.perf_counter() - t0)

        bare_rates = [bare()]
        text_rates = [bare_text()]
        for workers in worker_counts:
            tag = uuid.uuid4().hex[:8]
            with open_path(tag) as path:
                out["runs"][str(workers)] = _run_workers(path, tag, broker, seaweed, data, workers, tmp)
            bare_rates.append(bare())  # bare again after each run: both see the same machine
            text_rates.append(bare_text())
        bare_rate = sum(bare_rates) / len(bare_rates)
        out["bare_image_products_per_s"] = bare_rate
        out["bare_runs"] = bare_rates
        out["bare_image_cores"] = bare_cores
        text_rate = sum(text_rates) / len(text_rates)
        out["bare_text_products_per_s"] = text_rate
        # Both models in-process, no gRPC, one after the other: the model work a product needs.
        both = 1.0 / (1.0 / bare_rate + 1.0 / text_rate)
        out["bare_encoders_products_per_s"] = both
        out["views"] = int(img_servicer.backend.views) if hasattr(img_servicer.backend, "views") else None
        for run in out["runs"].values():
            run["ratio_to_bare"] = run["products_per_s"] / bare_rate
            run["ratio_to_bare_encoders"] = run["products_per_s"] / both
    finally:
        stack.close()
        for service, sv in ((img_service, img_servicer), (txt_service, txt_servicer)):
            service.stop(grace=1)
            sv.close()
        seaweed.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _run_workers(
    path: _Path, tag: str, broker: str, seaweed: SeaweedFS, data: Catalog, workers: int, tmp: Path
) -> dict[str, Any]:
    """One ingest of ``data`` through ``workers`` Celery worker processes; its timings and where the CPU went."""
    from prism.storage import S3Store, StoreSettings
    from services.ingest.app import create_app
    from services.ingest.settings import Settings as IngestSettings
    from services.ingest.submit import submit_catalog

    ingest = IngestSettings(
        broker_url=broker,
        text_encoder_address=path.text_address,
        image_encoder_address=path.image_address,
        fusion_address=path.fusion_address,
    ).with_broker_prefix(f"b{tag}")
    env = {
        **os.environ,
        **{f"PRISM_INGEST_{k.upper()}": str(v) for k, v in ingest.model_dump().items() if v is not None},
        "PRISM_INGEST_METRICS_PORT": "0",
        "PRISM_STORE_BACKEND": "s3",
        "PRISM_STORE_ENDPOINT": seaweed.endpoint,
        "PRISM_STORE_BUCKET": f"bench-{tag}",
        "PRISM_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO_ROOT),
    }
    store = S3Store(StoreSettings(backend="s3", endpoint=seaweed.endpoint, bucket=f"bench-{tag}"))
    store.ensure_bucket()
    app = create_app(ingest)
    app.declare_topology()
    procs = []
    for i in range(workers):
        with (tmp / f"worker-{tag}-{i}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.ingest"],
                    env=env,
                    cwd=REPO_ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        _wait_consumers(app, ingest.media_queue, workers)
        pids = {**path.pids, "workers": [p.pid for p in procs]}
        published: dict[str, float] = {}
        cpu0 = _cpu_seconds(pids)
        counters0 = path.counters()
        t0 = time.perf_counter()
        report = submit_catalog(
            app,
            store,
            data,
            show_progress=True,
            timeout_s=1800,
            on_published=functools.partial(_mark, published),
        )
        elapsed = time.perf_counter() - t0
        counters = {k: v - counters0[k] for k, v in path.counters().items()}
        cpu = {k: round(v - cpu0.get(k, 0.0), 2) for k, v in _cpu_seconds(pids).items()}
        summary = report.summary()
        return {
            "workers": workers,
            "seconds": round(elapsed, 2),
            "products_per_s": summary["indexed"] / elapsed,
            "indexed": summary["indexed"],
            "failed": summary["failed"],
            "upload_s": round(published["t"] - t0, 2),
            # share of the run the image model was computing, and its mean batch (photos)
            "image_busy": round(counters["image_busy_s"] / elapsed, 3),
            "image_mean_batch": round(counters["image_items"] / max(counters["image_batches"], 1), 1),
            "text_busy": round(counters["text_busy_s"] / elapsed, 3),
            # CPU seconds spent during the run, by process: where the time outside the models goes
            "cpu_s": cpu,
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        with app.connection_for_write() as conn:
            for q in (ingest.events_queue, ingest.text_queue, ingest.media_queue, ingest.dead_letter_queue):
                conn.default_channel.queue_delete(q)


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far: this process (uploader, bare models, in-process services) and each named one."""
    out = {"this_process": time.process_time()}
    for name, group in pids.items():
        out[name] = sum(_proc_cpu(p) for p in group)
    return out


def _batcher_counters(image: Any, text: Any) -> dict[str, float]:
    return {
        "image_busy_s": image.batcher.busy_s,
        "image_batches": image.batcher.batches,
        "image_items": image.batcher.items,
        "text_busy_s": text.batcher.busy_s,
    }


def _mark(box: dict[str, float], _n: int) -> None:
    box.setdefault("t", time.perf_counter())


def _wait_consumers(app: Any, queue: str, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.connection_for_write() as conn:
            if conn.default_channel.queue_declare(queue, passive=True).consumer_count >= n:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{n} workers did not start consuming {queue}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prism.bench_ingest")
    parser.add_argument("--catalog", type=Path, help="default: $PRISM_DATA_DIR/catalogs/myntra")
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    parser.add_argument(
        "--topology",
        default="processes",
        choices=["processes", "inprocess"],
        help="encoders and fusion as one process each (as deployed), or all served from this process",
    )
    parser.add_argument(
        "--text-precision",
        default="fp32",
        choices=["fp32", "bf16", "int8"],
        help="the path's text encoder (the image encoder, bare and in the path, stays fp32)",
    )
    args = parser.parse_args(argv)
    common = CommonSettings()
    setup_logging("WARNING", "console")
    catalog = Catalog.open(args.catalog or common.data_dir / "catalogs" / "myntra")
    workers = tuple(int(w) for w in args.workers.split(","))
    result = bench_ingest(common, catalog, args.products, workers, args.text_precision, args.topology)
    print(
        f"\nend-to-end ingestion ({result['products']} products, S3 -> RabbitMQ -> Celery -> gRPC -> fusion;"
        f" text encoder {args.text_precision}, services {args.topology})"
    )
    print(
        f"  bare image encoder: {result['bare_image_products_per_s']:.1f} products/s (in-process, no gRPC;"
        f" cores busy {result['bare_image_cores']})"
    )
    print(
        f"  bare text encoder: {result['bare_text_products_per_s']:.1f} products/s; both models, one after the"
        f" other: {result['bare_encoders_products_per_s']:.1f} products/s"
    )
    for run in result["runs"].values():
        print(
            f"  {run['workers']} worker(s): {run['products_per_s']:.1f} products/s"
            f"  ratio to bare image {run['ratio_to_bare']:.2f}, to bare image+text"
            f" {run['ratio_to_bare_encoders']:.2f}  ({run['indexed']} indexed, {run['failed']} failed;"
            f" image model busy {run['image_busy']:.0%}, mean batch {run['image_mean_batch']},"
            f" text model busy {run['text_busy']:.0%})"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    name = "ingest" + ("" if args.text_precision == "fp32" else f"-text-{args.text_precision}")
    name += ("" if args.topology == "processes" else "-inprocess") + ".json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
