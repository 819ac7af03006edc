"""Small vector helpers shared by the encoders, ingestion and the index."""

from __future__ import annotations

import numpy as np


def normalized_mean(vectors: np.ndarray) -> np.ndarray:
    """One unit vector summarising several unit vectors (the rows of any (..., dim) array)."""
    arr = np.asarray(vectors, dtype=np.float32)
    mean: np.ndarray = arr.reshape(-1, arr.shape[-1]).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """ColBERT-style MaxSim of unit-vector sets, averaged over query vectors (reads as a cosine)."""
    sims = np.asarray(query, dtype=np.float32) @ np.asarray(doc, dtype=np.float32).T
    return float(sims.max(axis=1).mean())
