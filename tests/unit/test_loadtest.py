"""The load generator's pure parts: the mix, the requests it builds, what it reads and reports."""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from prism.loadtest import LoadReport, Mix, Workload, _rss_from_metrics, next_request, write_json
from tests.media_samples import jpeg

pytestmark = pytest.mark.unit


def workload() -> Workload:
    return Workload(
        texts_en=["blue dress", "black ankle boots"],
        texts_zh=["蓝色连衣裙"],
        photos=[jpeg()],
        videos=[b"\x00\x00\x00\x18ftypisom"],
        product_ids=["10007", "10008"],
        filters=[{"colour": ["Blue"]}, {"type": ["Tshirts"]}],
    )


def test_mix_parse_replaces_named_weights_and_refuses_nonsense() -> None:
    mix = Mix.parse("photo=0.5, video=0.1")
    assert mix.photo == 0.5 and mix.video == 0.1 and mix.text_en == Mix().text_en
    for bad in ("photos=1", "photo", "photo=-1", "photo=nan"):
        with pytest.raises(ValueError):
            Mix.parse(bad)
    with pytest.raises(ValueError, match="every mix weight is 0"):
        Mix.parse(",".join(f"{k}=0" for k in Mix().__dataclass_fields__))


def test_requests_follow_the_mix_and_the_gateway_contract() -> None:
    rng, w = random.Random(0), workload()
    reqs = [next_request(rng, Mix(video=0.05), w) for _ in range(3000)]
    counts = Counter(r.kind for r in reqs)
    assert set(counts) == {"text_en", "text_zh", "filtered", "photo", "similar", "product", "video"}
    assert 0.25 < counts["text_en"] / len(reqs) < 0.35  # weight 0.30 of 1.05
    for r in reqs:
        if r.kind == "filtered":
            assert r.kwargs["json"]["filters"] in w.filters and r.kwargs["json"]["facets"] == ["colour", "type"]
        elif r.kind == "photo" and "json" in r.kwargs:
            assert base64.b64decode(r.kwargs["json"]["image_base64"]) == w.photos[0]
        elif r.kind == "photo":
            assert r.kwargs["files"]["image"][1] == w.photos[0]
        elif r.kind == "similar":
            assert r.path.endswith("/similar") and r.path.split("/")[3] in w.product_ids
        elif r.kind == "product":
            assert r.expect == "id" and r.method == "GET"
    assert {"json" in r.kwargs for r in reqs if r.kind == "photo"} == {True, False}  # base64 and multipart


def test_workload_refuses_a_mix_it_cannot_serve() -> None:
    w = workload()
    w.videos = []
    with pytest.raises(ValueError, match="video"):
        w.check(Mix(video=0.1))
    w.check(Mix())


def test_workload_from_a_query_set(tmp_path: Path) -> None:
    (tmp_path / "p.jpg").write_bytes(jpeg())
    lines = [
        {"qid": "text-en-0001", "text": "blue dress", "relevant": {}},
        {"qid": "text-zh-0001", "text": "蓝色连衣裙", "relevant": {}},
        {"qid": "image-1", "image": "p.jpg", "relevant": {}},
    ]
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines))
    w = Workload.from_queries(tmp_path / "q.jsonl")
    assert (w.texts_en, w.texts_zh, w.photos, w.videos) == (["blue dress"], ["蓝色连衣裙"], [jpeg()], [])


def test_rss_is_read_from_prometheus_text() -> None:
    text = "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
    text += "process_virtual_memory_bytes 9.0e+09\nprocess_resident_memory_bytes 2.4117248e+09\n"
    assert _rss_from_metrics(text) == 2_411_724_800
    assert _rss_from_metrics("prism_http_requests_total 3\n") is None


def test_report_json_is_strict(tmp_path: Path) -> None:
    report = LoadReport(
        url="http://x",
        clients=2,
        seconds=1.0,
        warmup_s=0.0,
        requests=0,
        errors=0,
        req_per_s=0.0,
        p50_ms=float("nan"),
        p90_ms=float("nan"),
        p99_ms=float("nan"),
        max_ms=float("nan"),
        by_kind={},
        error_counts={},
        error_samples=[],
        client_min_requests=0,
        warmup_requests=0,
        warmup_errors=0,
        rss_source="/metrics",
        rss_start=100,
        rss_end=110,
        rss_max=120,
        rss_samples=[(0.0, 100), (1.0, 110)],
    )
    write_json(report, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["p50_ms"] is None and data["rss_growth"] == pytest.approx(0.1)
    assert "p50" in report.summary()
