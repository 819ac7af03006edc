"""Images per forward pass of the image network: cache-sized on a CPU, fixed elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prism.models.efficientnet import DEFAULT_BATCH_SIZE, default_batch_size, last_level_cache_bytes

pytestmark = pytest.mark.unit

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
MIB = 2**20


@pytest.mark.parametrize(
    ("precision", "cache_mib", "views", "expected"),
    [
        ("fp32", 32, 3, 6),  # the measured optimum on a 32 MiB L3: 2 photos x 3 views
        ("bf16", 32, 3, 12),  # half the bytes per activation: twice the photos
        ("fp32", 105, 3, 21),  # a large server L3
        ("fp32", 2, 3, 3),  # a small cache still takes one whole photo's views
        ("fp32", 32, 1, 6),  # one view per photo (embed, classify)
        ("fp32", 1024, 3, 30),  # never above the accelerator batch, in whole photos
    ],
)
def test_cpu_batch_keeps_activations_in_cache(precision: str, cache_mib: int, views: int, expected: int) -> None:
    got = default_batch_size(CPU, precision, views=views, cache_bytes=cache_mib * MIB)  # type: ignore[arg-type]
    assert got == expected
    assert got % views == 0


def test_accelerators_int8_and_unknown_caches_keep_the_fixed_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_batch_size(CUDA, "fp16", cache_bytes=32 * MIB) == DEFAULT_BATCH_SIZE
    assert default_batch_size(CPU, "int8", cache_bytes=32 * MIB) == DEFAULT_BATCH_SIZE
    monkeypatch.setattr("prism.models.efficientnet.last_level_cache_bytes", lambda: None)
    assert default_batch_size(CPU, "fp32") == DEFAULT_BATCH_SIZE


def test_largest_cache_is_read_from_sysfs(tmp_path: Path) -> None:
    for name, size in (("index0", "48K"), ("index2", "2048K"), ("index3", "32M"), ("index4", "garbage")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "size").write_text(size + "\n")
    (tmp_path / "index5").mkdir()  # no size file: skipped
    assert last_level_cache_bytes(tmp_path) == 32 * MIB
    assert last_level_cache_bytes(tmp_path / "missing") is None
