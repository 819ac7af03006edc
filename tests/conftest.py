"""Shared fixtures: real services on free loopback ports, real models, real catalog slices."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

# Never reach for a model hub; weights come from installed packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One converted-weights cache per checkout, shared by every test session (converting e5 takes ~15 s).
os.environ.setdefault("PRISM_CACHE_DIR", str(REPO / "var" / "cache"))
os.environ.setdefault("PRISM_LOG_FORMAT", "console")
os.environ.setdefault("PRISM_LOG_LEVEL", "WARNING")


def data_dir() -> Path:
    return Path(os.environ.get("PRISM_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = data_dir()
    if not (path / "catalogs").is_dir():
        pytest.fail(f"test data not found at {path}; set PRISM_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    path = Path(os.environ["PRISM_CACHE_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def common_settings(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from prism.settings import CommonSettings

    return CommonSettings(cache_dir=cache_dir, var_dir=tmp_path_factory.mktemp("var"))


@pytest.fixture(scope="session")
def suite(common_settings) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The embedded suite (text + image encoders, gateway gRPC + HTTP), in-memory index, free ports."""
    from prism.embedded import start_suite
    from prism.logs import setup_logging

    setup_logging("WARNING", "console")
    s = start_suite(common=common_settings, index_path=None, http_port=0)
    yield s
    s.stop()


SLICE_SIZE = 300


@pytest.fixture(scope="session")
def myntra_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 300-product slice of the Myntra catalog, copied to a temporary folder."""
    import json
    import shutil

    src = shared_data / "catalogs" / "myntra"
    out = tmp_path_factory.mktemp("myntra300")
    (out / "images").mkdir()
    # Products that photo queries look for come first, so the slice can test photo search too.
    photo_targets: list[str] = []
    with (shared_data / "catalogs" / "myntra-queries.jsonl").open() as fh:
        for line in fh:
            q = json.loads(line)
            if q.get("image"):
                photo_targets.extend(pid for pid, g in q["relevant"].items() if g >= 2)
    wanted = set(photo_targets[:100])
    with (src / "products.jsonl").open() as fh:
        records = [json.loads(line) for line in fh]
    records = [r for r in records if r.get("images")]
    chosen = [r for r in records if r["id"] in wanted]
    chosen += [r for r in records if r["id"] not in wanted][: SLICE_SIZE - len(chosen)]
    lines = []
    for rec in chosen:
        for rel in rec["images"]:
            # Copied, not linked: the catalog reader refuses media that resolve outside the catalog.
            shutil.copyfile(src / rel, out / rel)
        lines.append(json.dumps(rec))
    (out / "products.jsonl").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def indexed_suite(suite, myntra_slice: Path):  # type: ignore[no-untyped-def]
    """The embedded suite with the 300-product Myntra slice ingested."""
    from prism.catalog import Catalog

    report = suite.ingest(Catalog.open(myntra_slice), show_progress=False)
    assert report.indexed + report.unchanged == SLICE_SIZE, report.summary()
    return suite


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event of any level, from any thread (the suite runs at WARNING), as dicts;
    the logging configuration is restored afterwards."""
    import structlog

    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)
