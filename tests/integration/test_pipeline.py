"""Ingestion through the real encoders: bad media and bad records are reported, never half-indexed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from prism.catalog import Catalog
from prism.fusion import FusionCore
from prism.index import IndexSettings, ProductIndex
from prism.pipeline import Ingestor
from tests.media_samples import bad_images

pytestmark = pytest.mark.integration


@pytest.fixture()
def mixed_catalog(myntra_slice: Path, tmp_path: Path) -> tuple[Path, set[str], set[str]]:
    good = [json.loads(line) for line in (myntra_slice / "products.jsonl").read_text().splitlines()[:6]]
    (tmp_path / "images").mkdir()
    lines: list[str] = []
    for rec in good:
        shutil.copyfile(myntra_slice / rec["images"][0], tmp_path / rec["images"][0])
        lines.append(json.dumps(rec))
    bad_ids: set[str] = set()
    for i, (name, data) in enumerate(sorted(bad_images().items())):
        pid = f"bad-{i}"
        (tmp_path / "images" / f"{name}.jpg").write_bytes(data)
        lines.append(json.dumps({"id": pid, "title": f"broken {name}", "images": [f"images/{name}.jpg"]}))
        bad_ids.add(pid)
    lines.append(json.dumps({"id": "bad-missing", "title": "no file", "images": ["images/missing.jpg"]}))
    lines.append(json.dumps({"id": "bad-escape", "title": "escape", "images": ["../../etc/passwd"]}))
    lines.append("{malformed json")
    lines.append(json.dumps({"id": "bad-empty"}))
    (tmp_path / "products.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path, {r["id"] for r in good}, bad_ids | {"bad-missing", "bad-escape", "bad-empty"}


def test_bad_media_and_records_are_reported_and_nothing_half_written(
    indexed_suite: Any, mixed_catalog: tuple[Path, set[str], set[str]]
) -> None:
    root, good, bad = mixed_catalog
    index = ProductIndex.open(IndexSettings(collection="mixed"))
    core = indexed_suite.gateway.core
    ingestor = Ingestor(FusionCore(index, indexed_suite.fusion_core.layout, model_id="test"), core.text, core.image)
    report = ingestor.ingest(Catalog.open(root), show_progress=False)
    assert report.indexed == len(good)
    failed_ids = {pid for pid, _, _ in report.failed}
    assert bad <= failed_ids and "line 14" in failed_ids
    codes = {pid: code for pid, code, _ in report.failed}
    assert codes["bad-missing"] == "missing_media" and codes["bad-empty"] == "no_content"
    assert all(reason for _, _, reason in report.failed)
    assert set(index.scroll_ids()) == good, "only the good products may be in the index"
    # a second run changes nothing and reports the same failures
    again = ingestor.ingest(Catalog.open(root), show_progress=False)
    assert again.indexed == 0 and again.unchanged == len(good) and len(again.failed) == len(report.failed)
    # a changed record is re-indexed, a removed one is pruned
    lines = (root / "products.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["title"] = "renamed product"
    (root / "products.jsonl").write_text("\n".join([json.dumps(first), *lines[2:]]) + "\n")
    third = ingestor.ingest(Catalog.open(root), prune=True, show_progress=False)
    assert third.indexed == 1 and third.deleted == 1
    assert index.get(first["id"])["title"] == "renamed product"
    assert len(index.scroll_ids()) == len(good) - 1
