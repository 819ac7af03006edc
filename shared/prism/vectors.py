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


def cosine_agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean and minimum cosine between matching rows of two (..., dim) arrays: how closely one
    encoder setting reproduces another's vectors."""
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    cos = (a2 * b2).sum(1) / (np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1))
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min())}
