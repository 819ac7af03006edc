"""`prism demo` as a user runs it: one command, serves search, a second run reuses the index."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_services import free_port

pytestmark = pytest.mark.e2e


def _run_demo(catalog: Path, index: Path, port: int, cache_dir: Path) -> tuple[str, dict[str, Any]]:
    env = {**os.environ, "PRISM_CACHE_DIR": str(cache_dir), "PRISM_LOG_LEVEL": "WARNING"}
    cmd = [
        sys.executable,
        "-m",
        "prism.cli",
        "demo",
        "--catalog",
        str(catalog),
        "--port",
        str(port),
        "--index",
        str(index),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 600
        for line in proc.stdout:
            out.append(line)
            if "Prism is serving" in line or time.monotonic() > deadline:
                break
        assert any("Prism is serving" in line for line in out), "".join(out)
        body = httpx.post(f"http://127.0.0.1:{port}/v1/search", json={"text": "black watch", "k": 3}, timeout=60).json()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        return "".join(out), body
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_demo_serves_and_second_run_reuses_the_index(
    indexed_suite: Any, myntra_slice: Path, tmp_path: Path, cache_dir: Path
) -> None:
    # indexed_suite first: its ingest fills the vector cache, so the demo does not encode again.
    index = tmp_path / "index"
    first, body = _run_demo(myntra_slice, index, free_port(), cache_dir)
    assert "'indexed': 300" in first and len(body["hits"]) == 3
    second, body = _run_demo(myntra_slice, index, free_port(), cache_dir)
    assert "'indexed': 0, 'unchanged': 300" in second and len(body["hits"]) == 3


def test_demo_without_catalog_says_what_to_do(tmp_path: Path) -> None:
    env = {**os.environ, "PRISM_DATA_DIR": str(tmp_path / "nowhere")}
    r = subprocess.run(
        [sys.executable, "-m", "prism.cli", "demo"], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode != 0
    assert "no catalog at" in r.stderr and "PRISM_DATA_DIR" in r.stderr
