"""Generated code must match protos/: run `make protos` after editing a .proto file."""

import filecmp
from pathlib import Path

import pytest

from prism.protogen import GEN_DIR, generate

pytestmark = pytest.mark.unit


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    produced = generate(tmp_path / "gen")
    assert produced, "no proto files found"
    for path in produced:
        committed = GEN_DIR / path.relative_to(tmp_path / "gen")
        assert committed.exists(), f"{committed} missing: run `make protos`"
        assert filecmp.cmp(path, committed, shallow=False), f"{committed} is stale: run `make protos`"
    committed_files = {p.relative_to(GEN_DIR) for p in GEN_DIR.rglob("*_pb2*.py*")}
    fresh_files = {p.relative_to(tmp_path / "gen") for p in produced}
    assert committed_files == fresh_files, "generated files without a proto: run `make protos`"


def test_proto_packages_are_versioned() -> None:
    protos = sorted(Path(__file__).resolve().parents[2].joinpath("protos").rglob("*.proto"))
    for p in protos:
        text = p.read_text()
        area, version = p.parent.parent.name, p.parent.name
        assert f"package prism.{area}.{version};" in text, p
