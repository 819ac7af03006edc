"""Input checks and length-sorted batching shared by the text models (e5/MiniLM and CLIP towers).

numpy only: importing it loads neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

TEXT_KINDS = ("query", "passage")


def check_texts(texts: Sequence[str], kind: str) -> None:
    if kind not in TEXT_KINDS:
        raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
    if isinstance(texts, str):
        # A bare str is a Sequence[str] of characters: almost certainly a caller bug.
        raise TypeError("embed() takes a sequence of texts, not a single str")


def embed_by_length(
    encoded: Sequence[Sequence[int]],
    dim: int,
    batch_size: int,
    forward: Callable[[list[Sequence[int]]], npt.NDArray[np.float32]],
) -> npt.NDArray[np.float32]:
    """Run ``forward`` over token-id lists in batches of similar length; rows keep input order.

    Longest first, so batches hold similar lengths (little padding) and the first batch hits peak
    memory at once rather than late in a long call.
    """
    n = len(encoded)
    out = np.empty((n, dim), dtype=np.float32)
    lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        out[idx] = forward([encoded[i] for i in idx])
    return out
