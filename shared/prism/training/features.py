"""Features that ``prism train`` learns from, computed once per catalog and cached.

Per product (its first image; products without a readable image are kept, flagged):

* image: EfficientNet-Lite0 pooled features of the chosen views (``(n, V, 1280)``, unit rows),
  plus :func:`prism.training.heads.colour_features` of the decoded photo;
* text: the text encoder's vectors of what the product says about itself -- ``"full"``
  (:meth:`Product.text`, as a passage), optionally ``"title"`` (passage) -- and of its attribute
  phrase ``"<colour> <type>"`` (as a query: the form shoppers type).

Cached as ``<cache_dir>/features/<catalog name>-<hash>.npz``, one file for the image part and one
for the text part; the hash covers the catalog's ``products.jsonl`` bytes, the image files'
names, sizes and modification times, the models and the options, so an edited catalog is
re-encoded and an unchanged one is not.  Image views already in the shared
:class:`~prism.vector_cache.VectorCache` (written by the image encoder service during ingest)
are reused instead of recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
import structlog

from prism.catalog import Catalog, Product
from prism.errors import PrismError
from prism.models.precision import fast_cpu_precision
from prism.progress import Progress
from prism.training.heads import COLOUR_DIM, colour_features

if TYPE_CHECKING:
    from prism.models.efficientnet import ImageEmbedder, Precision
    from prism.models.text import TextEmbedder, TextKind

log = structlog.get_logger(__name__)

FEATURES_VERSION: Final = 1
IMAGE_DIM: Final = 1280
ENCODER_VIEWS: Final = ("full", "center", "zoom")  # the image encoder service's default views
TEXT_VIEWS: Final = ("full", "title")
TEXT_MODEL: Final = "e5-small"
TEXT_DIM: Final = 384

_COLOUR_KEYS = ("colour", "color", "base_colour", "basecolour")
_TYPE_KEYS = ("type", "article_type", "articletype", "product_type", "category")
GROUP_KEYS = ("product_code", "group_id", "parent_id", "style_id")


def attribute_phrase(product: Product) -> str:
    """``"<colour> <type>"`` from the product's attributes, lower-cased ("" when either is missing)."""
    attrs = {k.lower(): v.strip() for k, v in product.attributes.items() if v and v.strip()}
    colour = next((attrs[k] for k in _COLOUR_KEYS if k in attrs), "")
    kind = next((attrs[k] for k in _TYPE_KEYS if k in attrs), "")
    if not colour or not kind or colour.lower() in ("unknown", "undefined", "na", "n/a"):
        return ""
    return re.sub(r"\s+", " ", f"{colour} {kind}").lower()


def product_type(product: Product) -> str:
    attrs = {k.lower(): v.strip() for k, v in product.attributes.items() if v and v.strip()}
    return next((attrs[k] for k in _TYPE_KEYS if k in attrs), "").lower()


def product_group(product: Product) -> str:
    """The group a product belongs to (its colour variants share it): an attribute such as H&M's
    ``product_code`` when present, else the product id itself."""
    for key in GROUP_KEYS:
        value = product.attributes.get(key)
        if value:
            return f"{key}:{value}"
    return f"id:{product.id}"


@dataclass
class CatalogFeatures:
    """Everything training needs from one catalog, row i = product i (file order)."""

    name: str
    ids: list[str]
    groups: list[str]
    types: list[str]
    phrases: list[str]  # per product, "" when the attributes do not give one
    image: npt.NDArray[np.float32]  # (n, V, 1280) unit rows; zeros where has_image is False
    colour: npt.NDArray[np.float32]  # (n, COLOUR_DIM)
    has_image: npt.NDArray[np.bool_]
    text: dict[str, npt.NDArray[np.float32]]  # view -> (n, 384) unit rows
    phrase_list: list[str]  # unique non-empty phrases
    phrase_vectors: npt.NDArray[np.float32]  # (len(phrase_list), 384) embedded as queries
    views: tuple[str, ...]
    data_hash: str
    image_model: str = ""
    text_model: str = ""
    cache_files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def phrase_index(self) -> npt.NDArray[np.int64]:
        """Per product, the row of its phrase in ``phrase_vectors`` (-1: none)."""
        where = {p: i for i, p in enumerate(self.phrase_list)}
        return np.array([where.get(p, -1) for p in self.phrases], dtype=np.int64)

    def subset(self, rows: npt.NDArray[np.int64]) -> CatalogFeatures:
        r = [int(i) for i in rows]
        return CatalogFeatures(
            name=self.name,
            ids=[self.ids[i] for i in r],
            groups=[self.groups[i] for i in r],
            types=[self.types[i] for i in r],
            phrases=[self.phrases[i] for i in r],
            image=self.image[rows],
            colour=self.colour[rows],
            has_image=self.has_image[rows],
            text={k: v[rows] for k, v in self.text.items()},
            phrase_list=self.phrase_list,
            phrase_vectors=self.phrase_vectors,
            views=self.views,
            data_hash=self.data_hash,
            image_model=self.image_model,
            text_model=self.text_model,
            cache_files=self.cache_files,
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fingerprint(catalog: Catalog, products: Sequence[Product]) -> str:
    """Cheap identity of a catalog: products.jsonl bytes + every first image's name, size, mtime."""
    h = hashlib.sha256(catalog.file.read_bytes())
    for p in products:
        if p.images:
            try:
                st = os.stat(catalog.media_path(p.images[0]))
                h.update(f"{p.images[0]}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except (OSError, PrismError):
                h.update(f"{p.images[0]}\0missing\n".encode())
    return h.hexdigest()


def _cache_path(cache_dir: Path, catalog: Catalog, parts: dict[str, object]) -> Path:
    digest = _sha256(json.dumps(parts, sort_keys=True).encode())[:16]
    return cache_dir / "features" / f"{catalog.name}-{digest}.npz"


def _save_npz(path: Path, **arrays: npt.NDArray[np.generic]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def _image_part(
    catalog: Catalog,
    products: Sequence[Product],
    *,
    path: Path,
    views: tuple[str, ...],
    embedder: ImageEmbedder | None,
    precision: Precision,
    vector_cache_path: Path | None,
    batch: int,
    show_progress: bool,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.bool_], list[str]]:
    if path.is_file():
        with np.load(path) as z:
            return z["image"], z["colour"], z["has_image"], [str(s) for s in z["image_sha"]]

    from prism.media.images import decode_image
    from prism.models.efficientnet import EMBEDDING_DIM, MODEL_ID, load_image_embedder
    from prism.vector_cache import VectorCache, vector_key

    n = len(products)
    image = np.zeros((n, len(views), EMBEDDING_DIM), dtype=np.float32)
    colour = np.zeros((n, COLOUR_DIM), dtype=np.float32)
    has_image = np.zeros(n, dtype=bool)
    shas = [""] * n
    emb = embedder
    vcache = VectorCache(vector_cache_path) if vector_cache_path is not None and vector_cache_path.is_file() else None
    view_idx = [ENCODER_VIEWS.index(v) for v in views] if all(v in ENCODER_VIEWS for v in views) else None
    reused = 0
    progress = Progress(f"image features {catalog.name}", n, enabled=show_progress)
    try:
        for start in range(0, n, batch):
            rows: list[int] = []
            images = []
            keys: list[str] = []
            for i in range(start, min(start + batch, n)):
                p = products[i]
                if not p.images:
                    continue
                try:
                    data = catalog.media_path(p.images[0]).read_bytes()
                    im = decode_image(data)
                except (OSError, PrismError) as exc:
                    log.warning("train.image_unreadable", catalog=catalog.name, id=p.id, error=str(exc))
                    continue
                shas[i] = _sha256(data)
                colour[i] = colour_features(im)
                has_image[i] = True
                rows.append(i)
                images.append(im)
                keys.append(vector_key(MODEL_ID, (len(ENCODER_VIEWS), EMBEDDING_DIM), "media", data))
            cached = vcache.get_many(keys) if vcache is not None and view_idx is not None else {}
            todo = []
            for j, (i, key) in enumerate(zip(rows, keys, strict=True)):
                hit = cached.get(key)
                if hit is not None and view_idx is not None and hit.size == len(ENCODER_VIEWS) * EMBEDDING_DIM:
                    image[i] = hit.reshape(len(ENCODER_VIEWS), EMBEDDING_DIM)[view_idx]
                    reused += 1
                else:
                    todo.append(j)
            if todo:
                if emb is None:
                    emb = load_image_embedder(device="cpu", precision=precision)
                image[[rows[j] for j in todo]] = emb.embed_views([images[j] for j in todo], views)  # type: ignore[arg-type]
            progress.update(min(batch, n - start))
    finally:
        elapsed = progress.close()
        if vcache is not None:
            vcache.close()
    log.info("train.image_features", catalog=catalog.name, n=n, reused=reused, seconds=round(elapsed, 1))
    _save_npz(path, image=image, colour=colour, has_image=has_image, image_sha=np.array(shas))
    return image, colour, has_image, shas


def _text_part(
    catalog: Catalog,
    products: Sequence[Product],
    phrase_list: list[str],
    *,
    path: Path,
    text_views: tuple[str, ...],
    embedder: TextEmbedder | None,
    cache_dir: Path,
    precision: Precision,
    vector_cache_path: Path | None,
    show_progress: bool,
) -> tuple[dict[str, npt.NDArray[np.float32]], npt.NDArray[np.float32]]:
    if path.is_file():
        with np.load(path) as z:
            return {v: z[f"text_{v}"] for v in text_views}, z["phrases"]

    import torch

    from prism.models.text import TEXT_MODELS, load_text_embedder
    from prism.vector_cache import VectorCache, vector_key

    model_id = TEXT_MODELS[TEXT_MODEL].model_id
    emb = embedder

    def embed(texts: list[str], kind: TextKind) -> npt.NDArray[np.float32]:
        nonlocal emb
        if emb is None:
            # the text encoder service's truncation, so its cached vectors and ours agree
            emb = load_text_embedder(TEXT_MODEL, cache_dir, device="cpu", max_tokens=256)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return emb.embed(texts, kind=kind)

    vcache = VectorCache(vector_cache_path) if vector_cache_path is not None and vector_cache_path.is_file() else None
    texts: dict[str, list[str]] = {
        "full": [p.text() for p in products],
        "title": [p.title or p.text() for p in products],
    }
    out: dict[str, npt.NDArray[np.float32]] = {}
    chunk = 256
    try:
        for view in text_views:
            items = texts[view]
            vecs = np.zeros((len(items), TEXT_DIM), dtype=np.float32)
            progress = Progress(f"text features {catalog.name} ({view})", len(items), enabled=show_progress)
            reused = 0
            for start in range(0, len(items), chunk):
                part = items[start : start + chunk]
                keys = [vector_key(model_id, (TEXT_DIM,), "passage", t) for t in part]
                cached = vcache.get_many(keys) if vcache is not None else {}
                todo = [j for j, k in enumerate(keys) if k not in cached or cached[k].size != TEXT_DIM]
                missing = set(todo)
                for j, k in enumerate(keys):
                    if j not in missing:
                        vecs[start + j] = cached[k]
                reused += len(part) - len(todo)
                if todo:
                    vecs[[start + j for j in todo]] = embed([part[j] for j in todo], "passage")
                progress.update(len(part))
            elapsed = progress.close()
            log.info("train.text_features", catalog=catalog.name, view=view, reused=reused, seconds=round(elapsed, 1))
            out[view] = vecs
        phrases = embed(phrase_list, "query") if phrase_list else np.zeros((0, TEXT_DIM), np.float32)
    finally:
        if vcache is not None:
            vcache.close()
    _save_npz(path, phrases=phrases, **{f"text_{v}": a for v, a in out.items()})
    return out, phrases


def extract_features(
    catalog: Catalog,
    *,
    cache_dir: Path,
    views: Sequence[str] = ("center",),
    text_views: Sequence[str] = ("full",),
    precision: Precision | None = None,
    image_embedder: ImageEmbedder | None = None,
    text_embedder: TextEmbedder | None = None,
    vector_cache: Path | None = None,
    show_progress: bool = True,
    batch: int = 64,
) -> CatalogFeatures:
    """Features of every valid product of ``catalog`` (computed once, then read from the cache).

    ``views``: image encoder views to keep (``"full"``, ``"center"``, ``"zoom"``); ``text_views``:
    ``"full"`` and/or ``"title"``; ``precision``: CPU precision of the encoders while extracting
    (default: bf16 where the CPU has native bfloat16, else fp32; bf16 image features agree with fp32
    to cosine ~0.998 at ~1.3x the speed there, text vectors to ~0.9999 at ~1.7x; emulated it is
    ~13x slower);
    ``vector_cache``: the shared vector cache to reuse image views and passage vectors from (default
    ``<cache_dir>/vectors.sqlite`` when it exists).
    """
    from prism.models.efficientnet import MODEL_ID as IMAGE_MODEL
    from prism.models.text import TEXT_MODELS

    bad = [v for v in views if v not in ENCODER_VIEWS] + [v for v in text_views if v not in TEXT_VIEWS]
    if bad or not views:
        raise ValueError(f"unknown or missing views: {bad}")
    if precision is None:
        precision = fast_cpu_precision()
    products = list(catalog.products())
    fingerprint = _fingerprint(catalog, products)
    text_model = TEXT_MODELS[TEXT_MODEL].model_id
    views_t, text_views_t = tuple(views), tuple(text_views)
    image_path = _cache_path(
        cache_dir,
        catalog,
        {
            "v": FEATURES_VERSION,
            "part": "image",
            "model": IMAGE_MODEL,
            "views": views_t,
            "precision": precision,
            "colour_dim": COLOUR_DIM,
            "catalog": fingerprint,
        },
    )
    phrases = [attribute_phrase(p) for p in products]
    phrase_list = sorted({p for p in phrases if p})
    text_path = _cache_path(
        cache_dir,
        catalog,
        {
            "v": FEATURES_VERSION,
            "part": "text",
            "model": text_model,
            "views": text_views_t,
            "precision": precision,
            "catalog": fingerprint,
        },
    )
    if vector_cache is None and (cache_dir / "vectors.sqlite").is_file():
        vector_cache = cache_dir / "vectors.sqlite"
    image, colour, has_image, shas = _image_part(
        catalog,
        products,
        path=image_path,
        views=views_t,
        embedder=image_embedder,
        precision=precision,
        vector_cache_path=vector_cache,
        batch=batch,
        show_progress=show_progress,
    )
    text, phrase_vectors = _text_part(
        catalog,
        products,
        phrase_list,
        path=text_path,
        text_views=text_views_t,
        embedder=text_embedder,
        cache_dir=cache_dir,
        precision=precision,
        vector_cache_path=vector_cache,
        show_progress=show_progress,
    )
    data = hashlib.sha256(catalog.file.read_bytes())
    for s in shas:
        data.update(s.encode() + b"\n")
    return CatalogFeatures(
        name=catalog.name,
        ids=[p.id for p in products],
        groups=[product_group(p) for p in products],
        types=[product_type(p) for p in products],
        phrases=phrases,
        image=image,
        colour=colour,
        has_image=has_image,
        text=text,
        phrase_list=phrase_list,
        phrase_vectors=phrase_vectors,
        views=views_t,
        data_hash=data.hexdigest(),
        image_model=IMAGE_MODEL,
        text_model=text_model,
        cache_files=[str(image_path), str(text_path)],
    )
