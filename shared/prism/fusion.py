"""Fusion: a product's modality vectors -> the vectors and payload that are indexed, and the writes.

The fusion service is the one writer of the product collection (ingestion workers never talk to
Qdrant themselves): it turns whatever modalities a product has into named vectors, adds the BM25
sparse vector of its text, keeps the BM25 statistics current, and replaces the product's point as
a whole.  :class:`FusionCore` is that logic; the gRPC service (``services/fusion``) and the
library ingestion path (:mod:`prism.pipeline`) both call it, and :class:`FusionClient` is how a
remote caller reaches it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
import structlog

from prism import metrics, tracing
from prism.catalog import parse_product
from prism.errors import InvalidInput, Unavailable
from prism.fusers import Fuser, equal_mix, fuse_one
from prism.gen.common.v1 import types_pb2
from prism.gen.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from prism.grpc_server import channel_options
from prism.index import AnyIndex
from prism.lexical import Bm25Encoder, SparseTerms
from prism.logs import REQUEST_ID_HEADER, current_request_id
from prism.tagger import PREDICTED_FIELD, PhotoTagger
from prism.vectors import normalized_mean

log = structlog.get_logger(__name__)

MODALITIES = ("text", "image", "video")
# Per-modality rows an update may carry: a modality's own vectors, and (with trained heads) the same
# media projected into the shared text-image space ("image_shared").
VECTOR_INPUTS = (*MODALITIES, *(f"{m}_shared" for m in MODALITIES if m != "text"))


def derived_names(modality: str) -> tuple[str, ...]:
    """The named vectors that come from one modality (kept together on a text-only update)."""
    return (modality, f"{modality}_views", f"{modality}_shared")


@dataclass(frozen=True)
class VectorLayout:
    """Named vectors of the product collection, as the running encoders produce them."""

    dims: dict[str, int]
    multivector: frozenset[str]
    sparse: frozenset[str] = frozenset({"lexical"})

    @classmethod
    def for_encoders(
        cls, text_dim: int, image_dim: int, image_views: bool, shared_dim: int = 0, video_dim: int = 0
    ) -> VectorLayout:
        """``text``; ``image`` (one vector per product: the mean of its photos' views), and for a
        multi-view image encoder ``image_views`` (every view, a MaxSim multivector used to rescore).

        With trained heads (``shared_dim``, the text encoder's space): ``image_shared`` (the photos
        projected into it) and ``shared`` (every modality fused by the learned weights), which text
        queries search: the photo speaks for a product whose text does not mention its colour.
        """
        dims = {"text": int(text_dim), "image": int(image_dim)}
        if image_views:
            dims["image_views"] = int(image_dim)
        if video_dim:
            dims["video"] = int(video_dim)  # product videos: one pooled vector per clip, averaged
        if shared_dim:
            if int(shared_dim) != int(text_dim):
                raise ValueError(f"shared space of {shared_dim} dimensions is not the text encoder's ({text_dim})")
            dims["image_shared"] = int(shared_dim)
            if video_dim:
                dims["video_shared"] = int(shared_dim)
            dims["shared"] = int(shared_dim)
        return cls(dims, frozenset({"image_views"} if image_views else ()))


@dataclass(frozen=True)
class ProductUpdate:
    """One product to (re)index: its record, content hashes and the vectors of its modalities."""

    product_id: str
    record: dict[str, Any]
    content_hash: str
    media_fingerprint: str = ""
    # modality -> (n, dim) rows: one row of text; every view of every photo.
    modalities: Mapping[str, np.ndarray] = field(default_factory=dict)
    # modalities whose vectors are kept from the current point (a text-only update)
    keep: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ProductState:
    content_hash: str
    media_fingerprint: str
    vectors: tuple[str, ...]


class ProductWriter(Protocol):
    """Where ingestion writes: the in-process :class:`FusionCore` or a remote fusion service."""

    def upsert(self, products: Sequence[ProductUpdate]) -> int: ...

    def delete(self, product_ids: Sequence[str]) -> int: ...

    def state(self, product_ids: Sequence[str]) -> dict[str, ProductState]: ...


class FusionCore:
    """Fuses modality vectors into the indexed vectors and writes products to the index."""

    def __init__(
        self,
        index: AnyIndex,
        layout: VectorLayout,
        *,
        model_id: str,
        lexical: Bm25Encoder | None = None,
        lexical_stats: Path | None = None,
        save_every_s: float = 5.0,
        fuser: Fuser | None = None,
        tagger: PhotoTagger | None = None,
    ) -> None:
        self.index = index
        self.layout = layout
        self.model_id = model_id
        # How the shared-space vectors of a product become its "shared" vector (prism train's
        # validated gate or mix; equal weights for a layout without trained heads).
        self.fuser: Fuser = fuser or equal_mix()
        # prism train's photo tagger: the kind a photo shows, written as the product's "predicted"
        # payload ("similar products" may favour the same predicted type where attributes are absent)
        self.tagger = tagger if tagger is not None and tagger.input in layout.dims else None
        if self.tagger is not None and self.tagger.dim != layout.dims[self.tagger.input]:
            # a models folder from other encoders: refuse to start rather than fail every product
            raise ValueError(
                f"the photo tagger reads {self.tagger.dim}-dimensional {self.tagger.input!r} vectors, "
                f"the encoders make {layout.dims[self.tagger.input]}"
            )
        index.ensure_collection(layout.dims, layout.multivector, layout.sparse)
        if lexical is None and lexical_stats is not None and lexical_stats.is_file():
            lexical = Bm25Encoder.load(lexical_stats)
        self.lexical = lexical or Bm25Encoder()
        self.lexical_stats = lexical_stats
        self._save_every_s = save_every_s
        self._last_save = 0.0
        # BM25 statistics are read-modify-write; concurrent upserts from the gRPC pool share them.
        self._lock = threading.Lock()

    # -- fusion ------------------------------------------------------------------------------
    def fuse(
        self,
        modalities: Mapping[str, np.ndarray],
        kept: Mapping[str, np.ndarray] | None = None,
        text_chars: int = 0,
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Named vectors to index (and the weight each modality got in ``shared``) from per-modality
        rows; ``kept``: named vectors of the current point reused for modalities not re-encoded;
        ``text_chars``: the length of the product's text (the learned gate weighs text by it)."""
        vectors: dict[str, np.ndarray] = {}
        for name, rows in modalities.items():
            if name not in VECTOR_INPUTS:
                raise InvalidInput(f"unknown modality {name!r}", code="invalid_modality")
            arr = np.asarray(rows, dtype=np.float32)
            if arr.ndim == 1:
                arr = arr.reshape(1, -1)
            if arr.size == 0:
                continue
            dim = self.layout.dims.get(name)
            if dim is not None and arr.shape[-1] != dim:
                raise InvalidInput(
                    f"{name} vectors have {arr.shape[-1]} dimensions, the index expects {dim}", code="invalid_vector"
                )
            if not np.isfinite(arr).all():
                raise InvalidInput(f"{name} vectors contain NaN or infinity", code="invalid_vector")
            vectors[name] = normalized_mean(arr)
            if f"{name}_views" in self.layout.dims:
                # every view of every photo: a query matching any one of them finds the product
                vectors[f"{name}_views"] = arr
        for name, vec in (kept or {}).items():
            vectors.setdefault(name, vec)
        if "shared" not in self.layout.dims:
            present = [m for m in MODALITIES if m in vectors]
            return vectors, {m: 1.0 / len(present) for m in present}
        # Text vectors are already in the shared space (it is the text encoder's); the "image" side is
        # what the camera saw: photos and product videos together (both through the image head).
        visual = [vectors[n] for n in ("image_shared", "video_shared") if n in vectors]
        sides = {"text": vectors.get("text"), "image": normalized_mean(np.stack(visual)) if visual else None}
        inputs = {m: v for m in self.fuser.modalities if (v := sides.get(m)) is not None}
        if not inputs:
            return vectors, {}
        fused, weights = fuse_one(self.fuser, inputs, text_chars)
        vectors["shared"] = np.asarray(fused, dtype=np.float32)
        return vectors, weights

    # -- writes ------------------------------------------------------------------------------
    def upsert(self, products: Sequence[ProductUpdate], *, observe: bool = True) -> int:
        """Replace each product's point; ``observe=False`` when the BM25 statistics were just fitted
        on these very products (a full catalog ingest), so they are not counted twice."""
        if not products:
            return 0
        with tracing.span("fuse", products=len(products)):
            return self._upsert(products, observe)

    def _upsert(self, products: Sequence[ProductUpdate], observe: bool) -> int:
        ids = [p.product_id for p in products]
        kept_names = sorted({n for p in products for m in p.keep for n in derived_names(m) if n in self.layout.dims})
        current = self.index.payloads(ids, fields=["content_hash"])
        kept = self.index.vectors(ids, kept_names) if kept_names else {}
        items: list[tuple[str, Mapping[str, np.ndarray | SparseTerms], dict[str, Any]]] = []
        new_products = []
        for p in products:
            product = parse_product({**p.record, "id": p.product_id})
            reuse = {
                name: vec
                for m in p.keep
                for name in derived_names(m)
                if (vec := kept.get(p.product_id, {}).get(name)) is not None
            }
            fused, weights = self.fuse(p.modalities, reuse, len(product.text()))
            vectors: dict[str, np.ndarray | SparseTerms] = dict(fused)
            terms = self.lexical.encode_document(product)
            if len(terms):
                vectors["lexical"] = terms
            if not vectors:
                raise InvalidInput(f"product {p.product_id!r} has no vectors to index", code="no_content")
            payload = {
                **product.to_record(),
                **{k: v for k, v in p.record.items() if k in ("catalog_root", "media_store")},
                "content_hash": p.content_hash,
                "media_fingerprint": p.media_fingerprint,
                "vectors": sorted(vectors),  # which named vectors this product has (similar-by-id needs it)
            }
            if self.tagger is not None and (photo := fused.get(self.tagger.input)) is not None:
                payload[PREDICTED_FIELD] = self.tagger.predict(photo)[0]
            if "shared" in vectors:
                # how much each modality weighed in the fused vector: hits say which one matched
                payload["fusion_weights"] = {m: round(w, 4) for m, w in weights.items()}
            items.append((p.product_id, vectors, payload))
            if p.product_id not in current:
                new_products.append(product)
        with self._lock:
            # New products join the BM25 statistics (an update keeps its old counts: they drift only
            # slightly until the next full `prism ingest`, which refits).
            for product in new_products if observe else ():
                self.lexical.observe(product)
            self.index.upsert(items)
            self._maybe_save_stats()
        metrics.INGESTED.labels("indexed").inc(len(items))
        return len(items)

    def delete(self, product_ids: Sequence[str]) -> int:
        existing = self.index.payloads(list(product_ids), fields=["content_hash"])
        self.index.delete(list(existing))
        if existing:
            metrics.INGESTED.labels("deleted").inc(len(existing))
        return len(existing)

    def state(self, product_ids: Sequence[str]) -> dict[str, ProductState]:
        found = self.index.payloads(list(product_ids), fields=["content_hash", "media_fingerprint", "vectors"])
        return {
            pid: ProductState(
                str(p.get("content_hash", "")), str(p.get("media_fingerprint", "")), tuple(p.get("vectors") or ())
            )
            for pid, p in found.items()
        }

    def flush(self) -> None:
        """Write the BM25 statistics now (on shutdown, and when an ingest run finishes)."""
        with self._lock:
            self._maybe_save_stats(force=True)
        self.index.publish_size()

    def _maybe_save_stats(self, force: bool = False) -> None:
        if self.lexical_stats is None:
            return
        now = time.monotonic()
        if force or now - self._last_save >= self._save_every_s:
            self.lexical.save(self.lexical_stats)
            self._last_save = now


# -- wire format --------------------------------------------------------------------------------


def _rows(vl: fusion_pb2.VectorList) -> np.ndarray:
    rows = [np.asarray(v.values, dtype=np.float32) for v in vl.vectors]
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    if len({r.shape[0] for r in rows}) != 1:
        raise InvalidInput("vectors of one modality differ in length", code="invalid_vector")
    return np.stack(rows)


def _vector_list(rows: np.ndarray) -> fusion_pb2.VectorList:
    arr = np.asarray(rows, dtype=np.float32).reshape(-1, np.asarray(rows).shape[-1])
    return fusion_pb2.VectorList(vectors=[types_pb2.Vector(values=r.tolist()) for r in arr])


def update_to_proto(u: ProductUpdate) -> fusion_pb2.ProductVectors:
    return fusion_pb2.ProductVectors(
        product_id=u.product_id,
        record_json=json.dumps(u.record, ensure_ascii=False, sort_keys=True),
        content_hash=u.content_hash,
        media_fingerprint=u.media_fingerprint,
        modalities=fusion_pb2.ModalityVectors(vectors={k: _vector_list(v) for k, v in u.modalities.items()}),
        keep=sorted(u.keep),
    )


def update_from_proto(m: fusion_pb2.ProductVectors) -> ProductUpdate:
    try:
        record = json.loads(m.record_json) if m.record_json else {}
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"record of {m.product_id!r} is not JSON: {exc.msg}", code="invalid_record") from exc
    if not isinstance(record, dict):
        raise InvalidInput(f"record of {m.product_id!r} is not a JSON object", code="invalid_record")
    unknown = set(m.keep) - set(MODALITIES)
    if unknown:
        raise InvalidInput(f"cannot keep unknown modalities {sorted(unknown)}", code="invalid_modality")
    return ProductUpdate(
        product_id=m.product_id,
        record=record,
        content_hash=m.content_hash,
        media_fingerprint=m.media_fingerprint,
        modalities={k: _rows(v) for k, v in m.modalities.vectors.items()},
        keep=frozenset(m.keep),
    )


class FusionClient:
    """A remote fusion service as a :class:`ProductWriter`; gRPC failures become Prism errors."""

    def __init__(self, address: str, *, timeout_s: float = 30.0, max_message_bytes: int = 32 * 2**20) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(address, options=channel_options(max_message_bytes))
        self._stub = fusion_pb2_grpc.FusionServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        rid = current_request_id()
        md = [(REQUEST_ID_HEADER, rid)] if rid else []
        try:
            return method(request, timeout=self.timeout_s, metadata=md + list(tracing.inject().items()))
        except grpc.RpcError as exc:
            status = exc.code()
            if status == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidInput(str(exc.details()), code="invalid_argument") from exc
            if status in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.CANCELLED,
            ):
                raise Unavailable(f"fusion service at {self.address} unavailable: {status.name}") from exc
            raise

    def upsert(self, products: Sequence[ProductUpdate], *, observe: bool = True) -> int:
        """Replace each product's point; ``observe=False`` when the BM25 statistics were just fitted
        on these very products (a full catalog ingest), so they are not counted twice."""
        if not products:
            return 0
        req = fusion_pb2.UpsertRequest(products=[update_to_proto(p) for p in products])
        return int(self._call(self._stub.Upsert, req).upserted)

    def delete(self, product_ids: Sequence[str]) -> int:
        if not product_ids:
            return 0
        return int(self._call(self._stub.Delete, fusion_pb2.DeleteRequest(product_ids=list(product_ids))).deleted)

    def state(self, product_ids: Sequence[str]) -> dict[str, ProductState]:
        if not product_ids:
            return {}
        resp = self._call(self._stub.State, fusion_pb2.StateRequest(product_ids=list(product_ids)))
        return {
            pid: ProductState(s.content_hash, s.media_fingerprint, tuple(s.vectors)) for pid, s in resp.products.items()
        }

    def indexed(self) -> int:
        return int(self._call(self._stub.State, fusion_pb2.StateRequest()).indexed)
