import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from prism.vector_cache import VectorCache, cache_key

pytestmark = pytest.mark.unit


def test_roundtrip_and_keys(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path / "v.sqlite")
    k1, k2 = cache_key("m", "query", "blue dress"), cache_key("m", "passage", "blue dress")
    assert k1 != k2 and cache_key("ab", "c") != cache_key("a", "bc")
    cache.put_many([(k1, np.arange(4, dtype=np.float32))])
    got = cache.get_many([k1, k2])
    assert list(got) == [k1] and got[k1].tolist() == [0, 1, 2, 3]
    assert len(cache) == 1
    cache.close()


def test_a_locked_cache_is_skipped_not_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    cache = VectorCache(path)
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        t0 = time.perf_counter()
        cache.put_many([(cache_key("x"), np.ones(3, dtype=np.float32))])
        assert time.perf_counter() - t0 < 2.0
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert cache.get_many([cache_key("x")]) == {}
    cache.put_many([(cache_key("y"), np.ones(3, dtype=np.float32))])
    assert cache_key("y") in cache.get_many([cache_key("y")])
    cache.close()
