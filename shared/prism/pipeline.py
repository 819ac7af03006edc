"""Ingestion as a library function: catalog -> encoders (gRPC, batched) -> index.

Safe to run again: point ids are derived from product ids and every point carries a content hash
of its record, its media bytes and the model ids, so an unchanged product is skipped and a changed
one is overwritten.  A product whose media cannot be decoded is reported and not indexed at all,
never half-written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import structlog

from prism import metrics
from prism.catalog import Catalog, Product, StripMode, parse_product
from prism.encoding import EncoderClient
from prism.errors import InvalidInput
from prism.fusion import FusionCore, ProductUpdate
from prism.lexical import Bm25Encoder
from prism.progress import Progress
from prism.vectors import normalized_mean

log = structlog.get_logger(__name__)

MAX_IMAGES_PER_PRODUCT = 4
MAX_VIDEOS_PER_PRODUCT = 2
MAX_MEDIA_BYTES = 20 * 2**20
MAX_VIDEO_BYTES = 50 * 2**20


@dataclass
class IngestReport:
    indexed: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (product id or line, code, reason)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        by_code: dict[str, int] = {}
        for _, code, _ in self.failed:
            by_code[code] = by_code.get(code, 0) + 1
        return {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "failed": len(self.failed),
            "failed_by_reason": by_code,
            "seconds": round(self.seconds, 1),
        }


def _batched(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    iterator = iter(it)
    while chunk := list(islice(iterator, n)):
        yield chunk


@dataclass(frozen=True)
class PreparedProduct:
    """A product read and validated, with its media bytes and hashes, before any encoding."""

    product: Product
    record: dict[str, Any]  # what the index stores as payload (the catalog record + where its media live)
    text: str
    media: tuple[bytes, ...]  # photos
    content_hash: str
    media_fingerprint: str
    videos: tuple[bytes, ...] = ()


def media_fingerprint(media: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for m in media:
        h.update(hashlib.sha256(m).digest())
    return h.hexdigest()


def prepare_product(
    product: Product,
    media: Sequence[bytes],
    *,
    models: str,
    extra: Mapping[str, Any] | None = None,
    fingerprint: str | None = None,
    videos: Sequence[bytes] = (),
) -> PreparedProduct:
    """Hash the record, the media (photos, then videos) and the model ids; refuse a product with
    nothing to index.

    ``fingerprint`` identifies the media when their bytes are not at hand (object sizes and etags).
    """
    text = product.text()
    if not text and not media and not videos and not product.images and not product.videos:
        raise InvalidInput("product has neither text nor media", code="no_content")
    record = {**product.to_record(), **(extra or {})}
    fingerprint = fingerprint if fingerprint is not None else media_fingerprint([*media, *videos])
    h = hashlib.sha256()
    h.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
    h.update(models.encode())
    h.update(fingerprint.encode())
    return PreparedProduct(product, record, text, tuple(media), h.hexdigest(), fingerprint, tuple(videos))


def encoder_models(text: EncoderClient, image: EncoderClient) -> str:
    """Model ids that every content hash includes: a new model re-encodes everything."""
    info = image.info()
    heads = f"+{info.shared_id}" if info.shared_id else ""
    return f"{text.info().model_id}|{info.model_id}{heads}"


def _encode_media(
    client: EncoderClient,
    todo: Sequence[PreparedProduct],
    which: str,
    keep_media: Collection[str],
    bad: dict[str, InvalidInput],
    timeout_s: float,
) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
    """One batched call for every photo (or video) of the batch: native and shared vectors by product."""
    flat = [
        (p.product.id, m)
        for p in todo
        if p.product.id not in keep_media
        for m in (p.media if which == "image" else p.videos)
    ]
    results = client.embed_media_encoded([m for _, m in flat], timeout=timeout_s) if flat else []
    native: dict[str, list[np.ndarray]] = {}
    shared: dict[str, list[np.ndarray]] = {}
    for (pid, _), res in zip(flat, results, strict=True):
        if isinstance(res, InvalidInput):
            bad.setdefault(pid, res)
        else:
            native.setdefault(pid, []).append(res.native)
            if res.shared is not None:
                shared.setdefault(pid, []).append(res.shared)
    return native, shared


def encode_products(
    text: EncoderClient,
    image: EncoderClient,
    todo: Sequence[PreparedProduct],
    *,
    timeout_s: float,
    keep_media: Collection[str] = (),
    video: EncoderClient | None = None,
) -> tuple[list[ProductUpdate], list[tuple[str, str, str]]]:
    """Encode a batch (one text call, one image call, one video call) into fusion updates; products
    whose media an encoder refused come back as (id, code, reason) and are not written at all.

    Products in ``keep_media`` have unchanged media: their image and video vectors are kept from the
    index.  Without a video encoder, products' videos are left out (their photos and text are indexed).
    """
    with_text = [p for p in todo if p.text]
    text_vecs = dict(
        zip(
            (p.product.id for p in with_text),
            text.embed_texts([p.text for p in with_text], kind="passage", timeout=timeout_s)
            if with_text
            else np.zeros((0, 0), dtype=np.float32),
            strict=True,
        )
    )
    bad: dict[str, InvalidInput] = {}
    image_vecs, shared_vecs = _encode_media(image, todo, "image", keep_media, bad, timeout_s)
    video_vecs: dict[str, list[np.ndarray]] = {}
    video_shared: dict[str, list[np.ndarray]] = {}
    if video is not None:
        video_vecs, video_shared = _encode_media(video, todo, "video", keep_media, bad, timeout_s)
    elif any(p.videos for p in todo):
        log.warning("ingest.videos_skipped", reason="no video encoder configured", products=len(todo))
    updates: list[ProductUpdate] = []
    failed: list[tuple[str, str, str]] = []
    for p in todo:
        pid = p.product.id
        if pid in bad:
            failed.append((pid, bad[pid].code, bad[pid].message))
            continue
        modalities: dict[str, np.ndarray] = {}
        if pid in text_vecs:
            modalities["text"] = text_vecs[pid].reshape(1, -1)
        if image_vecs.get(pid):
            modalities["image"] = np.concatenate([v.reshape(-1, v.shape[-1]) for v in image_vecs[pid]])
        if shared_vecs.get(pid):
            modalities["image_shared"] = np.stack(shared_vecs[pid])
        if video_vecs.get(pid):
            # a clip's views pooled into one vector per clip: "video" is their mean
            modalities["video"] = np.stack([normalized_mean(v.reshape(-1, v.shape[-1])) for v in video_vecs[pid]])
        if video_shared.get(pid):
            modalities["video_shared"] = np.stack(video_shared[pid])
        keep = frozenset({"image", "video"}) if pid in keep_media else frozenset()
        updates.append(ProductUpdate(pid, p.record, p.content_hash, p.media_fingerprint, modalities, keep))
    return updates, failed


class Ingestor:
    """Indexes a catalog folder through the encoder services and a fusion writer (library path).

    ``prism eval`` uses it (it can strip fields before indexing); the event-driven path
    (``services/ingest``) uses the same preparation, encoding and writer.
    """

    def __init__(
        self,
        writer: FusionCore,
        text: EncoderClient,
        image: EncoderClient,
        *,
        batch_size: int = 64,
        timeout_s: float = 600.0,
        video: EncoderClient | None = None,
    ) -> None:
        self.writer = writer
        self.text = text
        self.image = image
        self.video = video
        self.batch_size = batch_size
        # A batch of photos x views on a busy CPU takes far longer than a query: its own deadline.
        self.timeout_s = timeout_s
        self._models = encoder_models(text, image)

    @property
    def lexical(self) -> Bm25Encoder:
        return self.writer.lexical

    def _prepare(self, catalog: Catalog, product: Product, strip: StripMode) -> PreparedProduct:
        p = product.stripped(strip)

        def read(rel: str, limit: int) -> bytes:
            path = catalog.media_path(rel)
            try:
                with path.open("rb") as fh:
                    data = fh.read(limit + 1)
            except OSError as exc:
                raise InvalidInput(f"cannot read {rel}: {exc.strerror}", code="missing_media") from exc
            if len(data) > limit:
                raise InvalidInput(f"{rel} is larger than {limit} bytes", code="media_too_large")
            return data

        media = [read(rel, MAX_MEDIA_BYTES) for rel in p.images[:MAX_IMAGES_PER_PRODUCT]]
        videos = [read(rel, MAX_VIDEO_BYTES) for rel in p.videos[:MAX_VIDEOS_PER_PRODUCT]] if self.video else []
        return prepare_product(p, media, models=self._models, extra={"catalog_root": str(catalog.root)}, videos=videos)

    def ingest(
        self,
        catalog: Catalog,
        *,
        strip: StripMode = "none",
        prune: bool = False,
        limit: int | None = None,
        only: Collection[str] | None = None,
        show_progress: bool = True,
    ) -> IngestReport:
        """Index the catalog (its first ``limit`` records; of those, ``only`` these product ids)."""
        report = IngestReport()
        fitted = self.lexical.n_docs == 0
        if fitted:
            self.lexical.fit(
                p.stripped(strip) for p in islice(catalog.products(), limit) if only is None or p.id in only
            )
        total = len(catalog) if limit is None else min(limit, len(catalog))
        if only is not None:
            total = min(total, len(only))
        progress = Progress(f"ingest {catalog.name}", total, enabled=show_progress)
        seen: set[str] = set()
        records = (
            (lineno, rec, err)
            for lineno, rec, err in islice(catalog.records(), limit)
            if only is None or not isinstance(rec, dict) or rec.get("id") in only
        )
        for chunk in _batched(records, self.batch_size):
            prepared: list[PreparedProduct] = []
            for lineno, rec, err in chunk:
                try:
                    if err is not None:
                        raise InvalidInput(err, code="invalid_record")
                    product = parse_product(rec)
                    seen.add(product.id)
                    prepared.append(self._prepare(catalog, product, strip))
                except InvalidInput as exc:
                    ident = (
                        rec.get("id") if isinstance(rec, dict) and isinstance(rec.get("id"), str) else f"line {lineno}"
                    )
                    report.failed.append((str(ident), exc.code, exc.message))
            self._index_batch(prepared, report, observe=not fitted)
            progress.update(len(chunk))
        if prune:
            stale = [pid for pid in self.writer.index.scroll_ids() if pid not in seen]
            report.deleted = self.writer.delete(stale)
        report.seconds = progress.close()
        self.writer.flush()
        for outcome, n in (("unchanged", report.unchanged), ("failed", len(report.failed))):
            metrics.INGESTED.labels(outcome).inc(n)
        log.info("ingest.done", catalog=str(catalog.root), **report.summary())
        return report

    def _index_batch(self, prepared: Sequence[PreparedProduct], report: IngestReport, *, observe: bool) -> None:
        if not prepared:
            return
        state = self.writer.state([p.product.id for p in prepared])
        todo = [p for p in prepared if getattr(state.get(p.product.id), "content_hash", None) != p.content_hash]
        report.unchanged += len(prepared) - len(todo)
        if not todo:
            return
        updates, failed = encode_products(self.text, self.image, todo, timeout_s=self.timeout_s, video=self.video)
        report.failed.extend(failed)
        report.indexed += self.writer.upsert(updates, observe=observe)
