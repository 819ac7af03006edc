"""Ingestion as a library function: catalog -> encoders (gRPC, batched) -> index.

Safe to run again: point ids are derived from product ids and every point carries a content hash
of its record, its media bytes and the model ids, so an unchanged product is skipped and a changed
one is overwritten.  A product whose media cannot be decoded is reported and not indexed at all,
never half-written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import structlog

from prism import metrics
from prism.catalog import Catalog, Product, StripMode, parse_product
from prism.encoding import EncoderClient
from prism.errors import InvalidInput
from prism.index import ProductIndex
from prism.lexical import Bm25Encoder, SparseTerms
from prism.progress import Progress
from prism.vectors import normalized_mean

log = structlog.get_logger(__name__)

MAX_IMAGES_PER_PRODUCT = 4
MAX_MEDIA_BYTES = 20 * 2**20


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
class _Prepared:
    product: Product
    text: str
    media: tuple[bytes, ...]
    content_hash: str


@dataclass(frozen=True)
class VectorLayout:
    """Named vectors of the product collection, as the running encoders produce them."""

    dims: dict[str, int]
    multivector: frozenset[str]
    sparse: frozenset[str] = frozenset({"lexical"})

    @classmethod
    def of(cls, text: EncoderClient, image: EncoderClient) -> VectorLayout:
        """``text``; ``image`` (one vector per product: the mean of its photos' views), and for a
        multi-view image encoder ``image_views`` (every view, a MaxSim multivector used to rescore)."""
        img = image.info()
        dims = {"text": int(text.info().dim), "image": int(img.dim)}
        if img.views:
            dims["image_views"] = int(img.dim)
        return cls(dims, frozenset({"image_views"} if img.views else ()))


class Ingestor:
    """Indexes products through the encoder services into one collection."""

    def __init__(
        self,
        index: ProductIndex,
        text: EncoderClient,
        image: EncoderClient,
        *,
        batch_size: int = 64,
        timeout_s: float = 600.0,
        lexical: Bm25Encoder | None = None,
    ) -> None:
        self.index = index
        self.text = text
        self.image = image
        self.batch_size = batch_size
        # A batch of photos x views on a busy CPU takes far longer than a query: its own deadline.
        self.timeout_s = timeout_s
        self._models = f"{text.info().model_id}|{image.info().model_id}"
        self.layout = VectorLayout.of(text, image)
        index.ensure_collection(self.layout.dims, self.layout.multivector, self.layout.sparse)
        # BM25 statistics belong with the index; fitted on the first catalog ingested into it.
        self.lexical = lexical or Bm25Encoder()

    def _prepare(self, catalog: Catalog, product: Product, strip: StripMode) -> _Prepared:
        p = product.stripped(strip)
        media: list[bytes] = []
        for rel in p.images[:MAX_IMAGES_PER_PRODUCT]:
            path = catalog.media_path(rel)
            try:
                with path.open("rb") as fh:
                    data = fh.read(MAX_MEDIA_BYTES + 1)
            except OSError as exc:
                raise InvalidInput(f"cannot read {rel}: {exc.strerror}", code="missing_media") from exc
            if len(data) > MAX_MEDIA_BYTES:
                raise InvalidInput(f"{rel} is larger than {MAX_MEDIA_BYTES} bytes", code="media_too_large")
            media.append(data)
        text = p.text()
        if not text and not media:
            raise InvalidInput("product has neither text nor media", code="no_content")
        h = hashlib.sha256()
        h.update(json.dumps(p.to_record(), sort_keys=True, ensure_ascii=False).encode())
        h.update(self._models.encode())
        for m in media:
            h.update(hashlib.sha256(m).digest())
        return _Prepared(p, text, tuple(media), h.hexdigest())

    def ingest(
        self,
        catalog: Catalog,
        *,
        strip: StripMode = "none",
        prune: bool = False,
        limit: int | None = None,
        show_progress: bool = True,
    ) -> IngestReport:
        report = IngestReport()
        if self.lexical.n_docs == 0:
            self.lexical.fit(p.stripped(strip) for p in islice(catalog.products(), limit))
        total = len(catalog) if limit is None else min(limit, len(catalog))
        progress = Progress(f"ingest {catalog.name}", total, enabled=show_progress)
        seen: set[str] = set()
        records = islice(catalog.records(), limit)
        for chunk in _batched(records, self.batch_size):
            prepared: list[_Prepared] = []
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
            self._index_batch(catalog, prepared, report)
            progress.update(len(chunk))
        if prune:
            stale = [pid for pid in self.index.scroll_ids() if pid not in seen]
            self.index.delete(stale)
            report.deleted = len(stale)
        report.seconds = progress.close()
        self.index.publish_size()
        for outcome, n in (
            ("indexed", report.indexed),
            ("unchanged", report.unchanged),
            ("failed", len(report.failed)),
        ):
            metrics.INGESTED.labels(outcome).inc(n)
        log.info("ingest.done", catalog=str(catalog.root), **report.summary())
        return report

    def _index_batch(self, catalog: Catalog, prepared: Sequence[_Prepared], report: IngestReport) -> None:
        if not prepared:
            return
        existing = self.index.payloads([p.product.id for p in prepared], fields=["content_hash"])
        todo = [p for p in prepared if existing.get(p.product.id, {}).get("content_hash") != p.content_hash]
        report.unchanged += len(prepared) - len(todo)
        if not todo:
            return
        with_text = [p for p in todo if p.text]
        text_vecs = dict(
            zip(
                (p.product.id for p in with_text),
                self.text.embed_texts([p.text for p in with_text], kind="passage", timeout=self.timeout_s),
                strict=True,
            )
        )
        flat = [(p.product.id, m) for p in todo for m in p.media]
        image_results = self.image.embed_media([m for _, m in flat], timeout=self.timeout_s) if flat else []
        image_vecs: dict[str, list[np.ndarray]] = {}
        bad: dict[str, InvalidInput] = {}
        for (pid, _), res in zip(flat, image_results, strict=True):
            if isinstance(res, InvalidInput):
                bad.setdefault(pid, res)
            else:
                image_vecs.setdefault(pid, []).append(res)
        items: list[tuple[str, Mapping[str, np.ndarray | SparseTerms], dict[str, Any]]] = []
        for p in todo:
            pid = p.product.id
            if pid in bad:
                report.failed.append((pid, bad[pid].code, bad[pid].message))
                continue
            vecs: dict[str, np.ndarray | SparseTerms] = {}
            if pid in text_vecs:
                vecs["text"] = text_vecs[pid]
            terms = self.lexical.encode_document(p.product)
            if len(terms):
                vecs["lexical"] = terms
            if image_vecs.get(pid):
                views = np.concatenate([v.reshape(-1, v.shape[-1]) for v in image_vecs[pid]])
                vecs["image"] = normalized_mean(views)
                if "image_views" in self.layout.dims:
                    # every view of every photo: a query matching any one of them finds the product
                    vecs["image_views"] = views
            payload = {
                **p.product.to_record(),
                "catalog_root": str(catalog.root),
                "content_hash": p.content_hash,
                "vectors": sorted(vecs),  # which named vectors this product has (similar-by-id needs it)
            }
            items.append((pid, vecs, payload))
        self.index.upsert(items)
        report.indexed += len(items)
