"""Views of one photo for multi-view image search (no torch import: settings read this).

Each photo is indexed as several vectors (a Qdrant multivector compared by MaxSim): the whole
frame squashed to 224x224 matches re-renderings and squashed catalog photos; the standard centre
crop and a closer zoom match customer photos that are crops of the product shot.  Measured on
Myntra (2.1k products, photo-query Recall@1): re-rendered photos 0.76 (centre only) / 0.99 (full
only) -> 0.98 with all three; augmented customer photos 0.87 / 0.79 -> 0.93.
"""

from __future__ import annotations

from typing import Literal

View = Literal["full", "center", "zoom"]
VIEWS: tuple[View, ...] = ("full", "center", "zoom")
