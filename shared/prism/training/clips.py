"""Training the video encoder's temporal pool on clips synthesized from product photos.

Neither catalog has product videos, so ``prism train`` makes its own: each clip is a short camera
move over one product photo (a slow zoom and pan, a slight rotation, a background shift), with the
frames a phone gets wrong mixed in (motion blur, a crop that misses most of the product, an over- or
under-exposed frame, sensor noise).  The pool learns to weight the frames that look like the product
photo: the loss is InfoNCE between a clip's pooled vector and its product photo's vector, against
the other products of the batch.  It is kept only if it beats the plain mean of the frames on
held-out products' clips (Recall@1 of clip -> photo), else the untrained pool (the mean) is saved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import structlog
import torch
from PIL import Image, ImageEnhance, ImageFilter

from prism.catalog import Catalog, Product
from prism.models.precision import fast_cpu_precision
from prism.models.temporal import PoolConfig, TemporalPool, pool_clips
from prism.models.views import View
from prism.progress import Progress

if TYPE_CHECKING:
    from prism.models.efficientnet import ImageEmbedder

log = structlog.get_logger(__name__)

CLIP_FRAMES = 8
# The pool scores a frame from the mean of its views; one view keeps training 3x cheaper (the
# service pools all views with the same frame weights).
CLIP_VIEWS: tuple[View, ...] = ("center",)


def synthesize_clip(photo: Image.Image, rng: np.random.Generator, frames: int = CLIP_FRAMES) -> list[Image.Image]:
    """A phone-style clip of ``frames`` frames over one product photo (see the module doc)."""
    photo = photo.convert("RGB")
    w, h = photo.size
    zoom0, zoom1 = rng.uniform(1.0, 1.3), rng.uniform(1.0, 1.6)
    cx0, cy0, cx1, cy1 = rng.uniform(0.4, 0.6, size=4)
    angle0, angle1 = rng.uniform(-8, 8, size=2)
    background = tuple(int(x) for x in rng.integers(150, 256, size=3))
    out: list[Image.Image] = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        zoom = zoom0 + t * (zoom1 - zoom0)
        cx, cy = cx0 + t * (cx1 - cx0), cy0 + t * (cy1 - cy0)
        angle = angle0 + t * (angle1 - angle0)
        frame = photo.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=background)
        cw, ch = w / zoom, h / zoom
        left = min(max(cx * w - cw / 2, 0.0), w - cw)
        top = min(max(cy * h - ch / 2, 0.0), h - ch)
        frame = frame.crop((int(left), int(top), int(left + cw), int(top + ch))).resize((w, h))
        flaw = rng.random()
        if flaw < 0.12:  # motion blur
            frame = frame.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(2, 5))))
        elif flaw < 0.22:  # the camera drifted off the product
            s = float(rng.uniform(0.25, 0.4))
            x, y = rng.uniform(0, 1 - s, size=2)
            frame = frame.crop((int(x * w), int(y * h), int((x + s) * w), int((y + s) * h))).resize((w, h))
        elif flaw < 0.3:  # exposure
            frame = ImageEnhance.Brightness(frame).enhance(float(rng.choice([0.35, 1.9])))
        arr = np.asarray(frame, dtype=np.float32)
        arr += rng.normal(0, rng.uniform(2, 8), size=arr.shape)  # sensor noise
        out.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
    return out


@dataclass
class ClipFeatures:
    clips: npt.NDArray[np.float32]  # (n, F, V, D) frame-view features
    photos: npt.NDArray[np.float32]  # (n, V, D) the product photo's views
    ids: list[str]


def clip_features(
    catalog: Catalog,
    products: Sequence[Product],
    *,
    cache_dir: Path,
    embedder: ImageEmbedder | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> ClipFeatures:
    """Encode one synthesized clip per product and its photo (all views), cached by the product
    ids, their photos' bytes and the seed."""
    precision = fast_cpu_precision()  # bf16 autocast only where the CPU has native bfloat16
    # bf16 keeps the old key (clips cached before the precision was chosen were bf16)
    tag = "" if precision == "bf16" else f"\0{precision}"
    key = hashlib.sha256(f"clips-v1\0{seed}\0{CLIP_FRAMES}\0{CLIP_VIEWS}{tag}".encode())
    paths = []
    for p in products:
        path = catalog.media_path(p.images[0])
        key.update(f"{p.id}\0{path.stat().st_size}\0{path.stat().st_mtime_ns}\n".encode())
        paths.append(path)
    cache = cache_dir / "features" / f"{catalog.name}-clips-{key.hexdigest()[:16]}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return ClipFeatures(z["clips"], z["photos"], [str(x) for x in z["ids"]])
    if embedder is None:
        from prism.models.efficientnet import load_image_embedder

        embedder = load_image_embedder(device="cpu")
    rng = np.random.default_rng(seed)
    clips, photos = [], []
    progress = Progress(f"video clips {catalog.name}", len(products), enabled=show_progress)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for path in paths:
            with Image.open(path) as im:
                photo = im.convert("RGB")
            frames = synthesize_clip(photo, rng)
            feats = embedder.embed_views([photo, *frames], CLIP_VIEWS)
            photos.append(feats[0])
            clips.append(feats[1:])
            progress.update()
    progress.close()
    out = ClipFeatures(
        np.stack(clips).astype(np.float32), np.stack(photos).astype(np.float32), [p.id for p in products]
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, clips=out.clips, photos=out.photos, ids=np.asarray(out.ids))
    return out


def _mean_views(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    m = x.mean(axis=-2)
    out: npt.NDArray[np.float32] = (m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12)).astype(np.float32)
    return out


def clip_recall_at_1(pool: TemporalPool, data: ClipFeatures) -> float:
    """Share of clips whose pooled vector is nearest to their own product's photo."""
    pooled = _mean_views(pool_clips(pool, list(data.clips)))
    photos = _mean_views(data.photos)
    return float(np.mean(np.argmax(pooled @ photos.T, axis=1) == np.arange(len(photos))))


def train_pool(
    train: ClipFeatures, val: ClipFeatures, *, seed: int, epochs: int = 40, lr: float = 1e-3
) -> tuple[TemporalPool, dict[str, Any]]:
    """Fit the pool; returns it (or the untrained mean if that is better on ``val``) and a report."""
    torch.manual_seed(seed)
    pool = TemporalPool(PoolConfig(dim=train.clips.shape[-1]))
    mean_r1 = clip_recall_at_1(pool, val)
    frames = torch.from_numpy(train.clips)
    targets = torch.nn.functional.normalize(torch.from_numpy(train.photos).mean(dim=1), dim=-1)
    mask = torch.ones(frames.shape[:2], dtype=torch.bool)
    scale = torch.nn.Parameter(torch.tensor(float(np.log(20.0))))
    opt = torch.optim.AdamW([*pool.parameters(), scale], lr=lr, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(seed)
    n, batch = len(frames), 128
    best = (mean_r1, 0, {k: v.clone() for k, v in pool.state_dict().items()})
    history = []
    for epoch in range(1, epochs + 1):
        pool.train()
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n - 1, batch):
            idx = perm[start : start + batch]
            pooled, _ = pool(frames[idx], mask[idx])
            z = torch.nn.functional.normalize(pooled.mean(dim=1), dim=-1)
            logits = scale.exp().clamp(max=100.0) * z @ targets[idx].T
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(idx)))
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        r1 = clip_recall_at_1(pool, val)
        history.append({"epoch": epoch, "val_recall@1": r1})
        if r1 > best[0]:
            best = (r1, epoch, {k: v.clone() for k, v in pool.state_dict().items()})
    pool.load_state_dict(best[2])
    pool.eval()
    report = {
        "clips": {"train": len(train.ids), "validation": len(val.ids), "frames": CLIP_FRAMES},
        "val_recall@1": {"mean_pooling": mean_r1, "attention_pooling": best[0]},
        "kept": "attention" if best[1] else "mean",
        "best_epoch": best[1],
        "history": history,
    }
    log.info("train.video_pool", mean_r1=round(mean_r1, 4), pooled_r1=round(best[0], 4), kept=report["kept"])
    return pool, report
