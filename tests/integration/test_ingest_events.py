"""Event-driven ingestion on real parts: SeaweedFS (S3), RabbitMQ, Celery workers as separate
processes, gRPC encoders and the fusion service on loopback ports.

Each test owns its queue names (a random prefix), its bucket and its collection, so tests never
see one another's messages or products.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prism.devservers import REPO_ROOT, SeaweedFS, ensure_rabbitmq
from tests.media_samples import bad_images, jpeg, video_catalog

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS.start(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker_url() -> str:
    return ensure_rabbitmq()


@pytest.fixture(scope="module")
def image_encoder(suite: Any, common_settings: Any) -> Iterator[Any]:
    """An image encoder of this module's own, so a test can stop and restart it."""
    enc = RestartableImageEncoder(common_settings)
    enc.start()
    yield enc
    enc.stop()


class RestartableImageEncoder:
    def __init__(self, common: Any) -> None:
        self.common = common
        self.port = 0
        self.service: Any = None
        self.servicer: Any = None

    def start(self) -> None:
        from services.image_encoder.server import build_service
        from services.image_encoder.settings import Settings

        # No vector cache: every photo is really encoded, so the ingest is long enough to interrupt.
        settings = Settings(port=self.port, metrics_port=0, cache_vectors=False)
        self.service, self.servicer = build_service(settings, self.common)
        self.port = self.service.start()
        self.service.warm()

    def stop(self) -> None:
        self.service.stop(grace=0)
        self.servicer.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Pipeline:
    """Fusion service (own in-memory index), queue names, store and worker processes of one test."""

    env: dict[str, str]
    fusion: Any
    fusion_servicer: Any
    app: Any
    store: Any
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: Path | None = None

    @property
    def index(self) -> Any:
        return self.fusion_servicer.core.index

    def start_worker(self) -> subprocess.Popen[bytes]:
        assert self.logs is not None
        with (self.logs / f"worker-{len(self.workers)}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.ingest"],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait(5)
        self.fusion.stop(grace=0)
        with self.app.connection_for_write() as conn:
            ch = conn.default_channel
            s = self.app.settings
            for q in (s.events_queue, s.text_queue, s.media_queue, s.dead_letter_queue):
                ch.queue_delete(q)

    def ids(self) -> set[str]:
        return set(self.index.scroll_ids())

    def dead_letters(self) -> list[dict[str, Any]]:
        out = []
        with self.app.connection_for_write() as conn:
            ch = conn.default_channel
            while (msg := ch.basic_get(self.app.settings.dead_letter_queue, no_ack=True)) is not None:
                out.append(json.loads(msg.body))
        return out


@pytest.fixture
def pipeline(suite: Any, image_encoder: Any, seaweed: SeaweedFS, broker_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    from prism.storage import S3Store, StoreSettings
    from services.fusion import model as fusion_model
    from services.fusion.server import FusionServicer, fusion_grpc_service
    from services.fusion.settings import Settings as FusionSettings
    from services.ingest.app import create_app
    from services.ingest.settings import Settings as IngestSettings

    tag = uuid.uuid4().hex[:8]
    fusion_settings = FusionSettings(
        port=0,
        metrics_port=0,
        text_encoder_address=suite.encoders["text-encoder"].address,
        image_encoder_address=image_encoder.address,
        index_path=None,
        collection=f"ingest-{tag}",
        lexical_stats=None,
    )
    servicer = FusionServicer(lambda: fusion_model.load(fusion_settings), 256)
    fusion = fusion_grpc_service(servicer, fusion_settings)
    fusion.start()
    fusion.warm()
    names = {
        "PRISM_INGEST_EVENTS_EXCHANGE": f"t{tag}.s3-events",
        "PRISM_INGEST_EVENTS_QUEUE": f"t{tag}.s3-events",
        "PRISM_INGEST_TASKS_EXCHANGE": f"t{tag}.tasks",
        "PRISM_INGEST_TEXT_QUEUE": f"t{tag}.text",
        "PRISM_INGEST_MEDIA_QUEUE": f"t{tag}.media",
        "PRISM_INGEST_DEAD_LETTER_EXCHANGE": f"t{tag}.dlx",
        "PRISM_INGEST_DEAD_LETTER_QUEUE": f"t{tag}.dead",
        "PRISM_INGEST_OUTCOMES_EXCHANGE": f"t{tag}.outcomes",
    }
    env = {
        **os.environ,
        **names,
        "PRISM_INGEST_BROKER_URL": broker_url,
        "PRISM_INGEST_TEXT_ENCODER_ADDRESS": suite.encoders["text-encoder"].address,
        "PRISM_INGEST_IMAGE_ENCODER_ADDRESS": image_encoder.address,
        "PRISM_INGEST_VIDEO_ENCODER_ADDRESS": suite.encoders["video-encoder"].address,
        "PRISM_INGEST_FUSION_ADDRESS": fusion.address,
        "PRISM_INGEST_METRICS_PORT": "0",
        "PRISM_INGEST_CONCURRENCY": "4",
        # short backoff so the encoder-restart test finishes quickly
        "PRISM_INGEST_RETRY_BACKOFF_MAX_S": "4",
        "PRISM_STORE_BACKEND": "s3",
        "PRISM_STORE_ENDPOINT": seaweed.endpoint,
        "PRISM_STORE_BUCKET": f"prism-{tag}",
        "PRISM_LOG_FORMAT": "json",
        "PRISM_LOG_LEVEL": "INFO",
        "PYTHONPATH": str(REPO_ROOT),
    }
    store_settings = StoreSettings(backend="s3", endpoint=seaweed.endpoint, bucket=f"prism-{tag}")
    store = S3Store(store_settings)
    store.ensure_bucket()
    app = create_app(
        IngestSettings(
            **{k.removeprefix("PRISM_INGEST_").lower(): v for k, v in env.items() if k.startswith("PRISM_INGEST_")}
        )
    )
    app.declare_topology()
    p = Pipeline(env, fusion, servicer, app, store, logs=tmp_path)
    yield p
    p.stop()


def _catalog(src: Path, out: Path, n: int) -> Path:
    """The first ``n`` products of a catalog that have photos, copied to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    lines = []
    with (src / "products.jsonl").open() as fh:
        for line in fh:
            rec = json.loads(line)
            if not rec.get("images"):
                continue
            for rel in rec["images"]:
                shutil.copyfile(src / rel, out / rel)
            lines.append(json.dumps(rec))
            if len(lines) == n:
                break
    (out / "products.jsonl").write_text("\n".join(lines) + "\n")
    return out


def _image_items_encoded() -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("prism_items_total", {"service": "image-encoder", "outcome": "ok"})
    return float(value or 0.0)


def _submit(p: Pipeline, root: Path, **kw: Any) -> Any:
    from prism.catalog import Catalog
    from services.ingest.submit import submit_catalog

    return submit_catalog(p.app, p.store, Catalog.open(root), show_progress=False, timeout_s=240, **kw)


def test_happy_path_update_and_delete(pipeline: Pipeline, myntra_slice: Path, tmp_path: Path) -> None:
    pipeline.start_worker()
    root = tmp_path / "cat"
    shutil.copytree(myntra_slice, root)
    report = _submit(pipeline, root)
    assert report.summary()["indexed"] == 300, report.summary()
    assert pipeline.ids() == {json.loads(x)["id"] for x in (root / "products.jsonl").read_text().splitlines()}
    # update 20 (new title, new photo), delete 10
    lines = [json.loads(x) for x in (root / "products.jsonl").read_text().splitlines()]
    for i, rec in enumerate(lines[:20]):
        rec["title"] = f"renamed {i} {rec['title']}"
        (root / rec["images"][0]).write_bytes(jpeg((80, 120), colour=(10 * i, 200, 40)))
    kept = lines[:290]
    (root / "products.jsonl").write_text("\n".join(json.dumps(r) for r in kept) + "\n")
    second = _submit(pipeline, root, prune=True)
    s = second.summary()
    assert s["indexed"] == 20 and s["unchanged"] == 270 and s["deleted"] == 10 and s["failed"] == 0, s
    assert pipeline.ids() == {r["id"] for r in kept}
    payloads = pipeline.index.payloads([r["id"] for r in kept[:20]], fields=["title"])
    assert all(payloads[r["id"]]["title"] == r["title"] for r in kept[:20])
    # a text-only edit re-encodes the text and keeps the stored photo vectors (no photo is fetched)
    edited = kept[20:25]
    before = pipeline.index.vectors([r["id"] for r in edited], ["image", "text"])
    photos_encoded = _image_items_encoded()
    for rec in edited:
        rec["title"] = f"{rec['title']} (new season)"
    (root / "products.jsonl").write_text("\n".join(json.dumps(r) for r in kept) + "\n")
    third = _submit(pipeline, root).summary()
    assert third["indexed"] == 5 and third["unchanged"] == 285, third
    assert _image_items_encoded() == photos_encoded, "a text-only edit must not re-encode photos"
    after = pipeline.index.vectors([r["id"] for r in edited], ["image", "text"])
    for rec in edited:
        pid = rec["id"]
        # kept, not recomputed (Qdrant re-normalises cosine vectors on upsert: equal to rounding)
        assert np.allclose(after[pid]["image"], before[pid]["image"], atol=1e-6)
        assert not np.allclose(after[pid]["text"], before[pid]["text"], atol=1e-3)
    assert pipeline.dead_letters() == []


def test_product_videos_are_fetched_from_s3_and_encoded_by_a_worker_process(
    pipeline: Pipeline, suite: Any, myntra_slice: Path, shared_data: Path, tmp_path: Path
) -> None:
    """Products with videos on the distributed path: the uploader puts the videos in SeaweedFS, a
    worker process fetches them and has the video encoder encode them over gRPC into the index."""
    from prism.catalog import Catalog
    from prism.vectors import normalized_mean

    src = Catalog.open(myntra_slice)
    products = list(src.products())[:3]
    root = tmp_path / "cat"
    reel = (shared_data / "videos" / "reel-b.mp4").read_bytes()
    ids = video_catalog(products, src, root, reel)
    pipeline.start_worker()
    s = _submit(pipeline, root).summary()
    assert s["indexed"] == 3 and s["failed"] == 0 and s["missing"] == 0, s
    # the uploader put the video in the bucket under the product's media and the record names it
    record = json.loads(pipeline.store.get(f"products/{ids[0]}.json", 2**20))
    assert record["videos"] == [f"media/{ids[0]}/{ids[0]}.mp4"] and record["images"] == []
    assert pipeline.store.get(record["videos"][0], 2**26) == reel
    got = pipeline.index.vectors(ids, ["video", "image"])
    assert set(got[ids[0]]) == {"video"}, "the video-only product is indexed by its video"
    assert all(set(got[pid]) == {"video", "image"} for pid in ids[1:]), {p: set(v) for p, v in got.items()}
    # it is that video's vector, and the same real video as a query finds the product first
    [enc] = suite.gateway.core.video.embed_media_encoded([reel], timeout=120, ephemeral=True)
    assert not isinstance(enc, Exception), enc
    query = normalized_mean(enc.native.reshape(-1, enc.native.shape[-1]))
    stored = got[ids[0]]["video"].reshape(-1)
    assert float(stored @ query / np.linalg.norm(stored)) > 0.999
    assert [h.product_id for h in pipeline.index.search("video", query, limit=3)][0] == ids[0]
    assert pipeline.dead_letters() == []


def _in_background(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["report"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _finish(t: threading.Thread, box: dict[str, Any]) -> Any:
    t.join(300)
    assert not t.is_alive(), "ingest did not finish"
    if "error" in box:
        raise box["error"]
    return box["report"]


@pytest.fixture(scope="module")
def catalog500(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _catalog(shared_data / "catalogs" / "myntra", tmp_path_factory.mktemp("myntra500"), 500)


def test_sigkill_worker_mid_ingest_loses_and_duplicates_nothing(pipeline: Pipeline, catalog500: Path) -> None:
    first = pipeline.start_worker()
    t, box = _in_background(lambda: _submit(pipeline, catalog500))
    _wait_for(lambda: pipeline.index.count() >= 60, 180, "the first products to be indexed")
    os.killpg(first.pid, signal.SIGKILL)  # no warm shutdown: in-flight tasks die unacknowledged
    first.wait(10)
    done_at_kill = pipeline.index.count()
    assert done_at_kill < 500, "the kill came too late to test anything"
    pipeline.start_worker()
    report = _finish(t, box)
    s = report.summary()
    assert s["failed"] == 0 and s["missing"] == 0, s
    ids = [json.loads(x)["id"] for x in (catalog500 / "products.jsonl").read_text().splitlines()]
    assert pipeline.index.count() == 500 and pipeline.ids() == set(ids)
    assert pipeline.dead_letters() == []


def test_image_encoder_down_then_back_tasks_retry_and_finish(
    pipeline: Pipeline, image_encoder: Any, catalog500: Path, tmp_path: Path
) -> None:
    root = _catalog(catalog500, tmp_path / "cat", 150)
    pipeline.start_worker()
    t, box = _in_background(lambda: _submit(pipeline, root))
    _wait_for(lambda: pipeline.index.count() >= 20, 180, "the first products to be indexed")
    image_encoder.stop()
    time.sleep(4)
    assert pipeline.index.count() < 150
    image_encoder.start()  # same port: the workers' channels reconnect
    report = _finish(t, box)
    s = report.summary()
    assert s["indexed"] == 150 and s["failed"] == 0, s
    assert pipeline.index.count() == 150
    assert pipeline.dead_letters() == []


def test_broker_connections_closed_mid_ingest_lose_nothing(
    pipeline: Pipeline, catalog500: Path, tmp_path: Path
) -> None:
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl is not None, "rabbitmqctl comes with the RabbitMQ server package"
    root = _catalog(catalog500, tmp_path / "cat", 150)
    pipeline.start_worker()
    t, box = _in_background(lambda: _submit(pipeline, root))
    _wait_for(lambda: pipeline.index.count() >= 20, 180, "the first products to be indexed")
    # Every client connection drops (the worker's, the publisher's, this run's follower).
    subprocess.run([rabbitmqctl, "close_all_connections", "prism test: connection loss"], check=True, timeout=60)
    report = _finish(t, box)
    s = report.summary()
    assert s["failed"] == 0 and s["missing"] == 0, s
    assert pipeline.index.count() == 150
    assert pipeline.dead_letters() == []


def test_bad_media_go_to_the_dead_letter_queue_with_reasons(
    pipeline: Pipeline, catalog500: Path, tmp_path: Path
) -> None:
    root = _catalog(catalog500, tmp_path / "cat", 40)
    good = [json.loads(x) for x in (root / "products.jsonl").read_text().splitlines()]
    bad_ids: dict[str, str] = {}
    lines = [json.dumps(r) for r in good]
    for variant in range(4):
        for kind, data in bad_images().items():
            pid = f"bad-{kind}-{variant}".replace("_", "-")
            name = f"images/{pid}.jpg"
            (root / name).write_bytes(data + (b"\0" * variant if data else b""))
            lines.insert(2 * len(bad_ids) + 1, json.dumps({"id": pid, "title": f"broken {kind}", "images": [name]}))
            bad_ids[pid] = kind
    assert len(bad_ids) == 20
    (root / "products.jsonl").write_text("\n".join(lines) + "\n")
    pipeline.start_worker()
    report = _submit(pipeline, root)
    s = report.summary()
    assert s["indexed"] == 40 and s["failed"] == 20, s
    assert pipeline.ids() == {r["id"] for r in good}
    # `prism ingest status` reads the same: queue depths and the dead letters, left in place
    from services.ingest.submit import queue_status

    status = queue_status(pipeline.app, peek=25)
    s_ = pipeline.app.settings
    assert status["queues"][s_.dead_letter_queue]["messages"] == 20
    assert status["queues"][s_.media_queue]["messages"] == 0 and status["queues"][s_.text_queue]["messages"] == 0
    assert {d["product_id"] for d in status["dead_letters"]} == set(bad_ids)
    dead = {d["product_id"]: d for d in pipeline.dead_letters()}
    assert set(dead) == set(bad_ids)
    for d in dead.values():
        assert d["code"] and d["reason"], d
        assert d["code"] not in ("retries_exhausted",), d
    # the reasons name what was wrong
    assert {dead[p]["code"] for p in bad_ids if bad_ids[p] == "png_30000x30000"} == {"image_too_large"}


def test_webhook_events_index_like_amqp_ones_and_bad_events_are_refused(
    pipeline: Pipeline, suite: Any, myntra_slice: Path
) -> None:
    from fastapi.testclient import TestClient

    from prism.catalog import Catalog
    from prism.events import build_event
    from services.gateway.http import create_app
    from services.ingest.submit import EventPublisher, upload_product

    catalog = Catalog.open(myntra_slice)
    products = list(catalog.products())[:5]
    events = [upload_product(pipeline.store, catalog, p, run="") for p in products]
    publisher = EventPublisher(pipeline.app)
    app = create_app(suite.gateway.core)  # a second app over the suite's core: only its event sink differs
    app.state.event_sink = lambda event: publisher.publish([event])
    pipeline.start_worker()
    with TestClient(app) as client:
        good = json.dumps(build_event("created", "b", "products/x.json"))
        bad = [
            b"not json",
            json.dumps({"Records": []}).encode(),
            json.dumps({"Records": [{"eventName": "s3:Nope"}]}).encode(),
            good.replace("products/x.json", "../etc/passwd").encode(),  # a path trick in the key
        ]
        for body in bad:
            r = client.post("/v1/events/s3", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["message"], r.text
        for ev in events:
            r = client.post("/v1/events/s3", json=ev)
            assert r.status_code == 202 and r.json() == {"accepted": 1}
    _wait_for(lambda: pipeline.index.count() == 5, 120, "the webhook's products to be indexed")
    assert pipeline.ids() == {p.id for p in products}
    assert pipeline.dead_letters() == []


def test_prism_seed_smoke_tests_a_distributed_deployment(
    pipeline: Pipeline, suite: Any, image_encoder: Any, myntra_slice: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compose `seed` service's command against real RabbitMQ, SeaweedFS, a worker process and
    a gateway over the fusion service's index."""
    from prism.cli import main
    from services.gateway.server import build_gateway
    from services.gateway.settings import Settings as GatewaySettings

    for k, v in pipeline.env.items():
        if k.startswith(("PRISM_INGEST_", "PRISM_STORE_")):
            monkeypatch.setenv(k, v)
    gateway = build_gateway(
        GatewaySettings(
            port=0,
            http_port=0,
            text_encoder_address=suite.encoders["text-encoder"].address,
            image_encoder_address=image_encoder.address,
            index_path=None,
            lexical_reload_s=0,
        ),
        index=pipeline.index,
    )
    gateway.grpc.start()
    port = gateway.start_http("127.0.0.1", 0)
    gateway.grpc.warm()
    gateway.core.set_lexical(pipeline.fusion_servicer.core.lexical)
    pipeline.start_worker()
    try:
        code = main(
            [
                "seed",
                "--catalog",
                str(myntra_slice),
                "--limit",
                "40",
                "--queries",
                "8",
                "--gateway",
                f"http://127.0.0.1:{port}",
            ]
        )
        assert code == 0
        assert pipeline.index.count() == 40
        # photos of S3-ingested products are served from the store (none without one configured)
        import httpx

        pid = next(iter(pipeline.ids()))
        url = f"http://127.0.0.1:{port}/v1/products/{pid}/images/0"
        assert httpx.get(url, timeout=30).status_code == 404
        gateway.core.store = pipeline.store
        r = httpx.get(url, timeout=30)
        key = pipeline.index.get(pid)["images"][0]
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.content == pipeline.store.get(key, 10**7)
    finally:
        gateway.stop()  # HTTP, gRPC and its encoder channels; the index is the pipeline's
