"""One loaded CLIP checkpoint per process, shared by the text and image encoder services.

In the embedded mode both services run in one process; loading the checkpoint once keeps one copy
of the weights in memory.
"""

from __future__ import annotations

import threading
from pathlib import Path

from prism.models.clip import ClipImageEmbedder, ClipTextEmbedder, load_clip_embedders

_loaded: dict[tuple[str, str | None], tuple[ClipTextEmbedder, ClipImageEmbedder]] = {}
_lock = threading.Lock()


def clip_towers(folder: Path, device: str | None = None) -> tuple[ClipTextEmbedder, ClipImageEmbedder]:
    key = (str(Path(folder).resolve()), device)
    with _lock:
        if key not in _loaded:
            _loaded[key] = load_clip_embedders(Path(folder), device=device)
        return _loaded[key]
