import threading
import time

import pytest

from prism.batching import MicroBatcher

pytestmark = pytest.mark.unit


def test_concurrent_callers_share_batches_and_keep_order() -> None:
    sizes: list[int] = []

    def model(items: list[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.01)
        return [i * 10 for i in items]

    b: MicroBatcher[int, int] = MicroBatcher(model, max_batch=16, max_wait_s=0.02, name="test")
    results: dict[int, list[int]] = {}

    def call(n: int) -> None:
        results[n] = b.submit([n, n + 100])

    threads = [threading.Thread(target=call, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.close()
    assert all(results[n] == [n * 10, (n + 100) * 10] for n in range(12))
    assert max(sizes) > 2, "requests from different callers were never batched together"
    assert max(sizes) <= 16


def test_errors_reach_every_caller_and_empty_is_free() -> None:
    def model(items: list[int]) -> list[int]:
        raise RuntimeError("boom")

    b: MicroBatcher[int, int] = MicroBatcher(model, name="fail")
    assert b.submit([]) == []
    with pytest.raises(RuntimeError, match="boom"):
        b.submit([1])
    b.close()


def test_invalid_max_batch() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(lambda x: x, max_batch=0)
