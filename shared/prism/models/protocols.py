"""What the encoder services need from a model, so a CLIP checkpoint can stand in for the defaults."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
from PIL import Image

from prism.models.views import View


class TextModel(Protocol):
    model_id: str
    dim: int

    @property
    def device(self) -> object: ...  # str or torch.device; reported by Info

    def embed(self, texts: Sequence[str], kind: Literal["query", "passage"]) -> np.ndarray: ...


class ImageModel(Protocol):
    model_id: str
    dim: int

    @property
    def device(self) -> object: ...

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_views(self, images: Sequence[Image.Image], views: Sequence[View]) -> np.ndarray: ...
