"""The product index: one Qdrant point per product, named vectors per modality, attributes as payload.

The same code talks to a Qdrant server (``url``) or to Qdrant's embedded local mode (``path`` or
in-memory).  Point ids are UUIDv5 of the product id, so re-ingesting a product overwrites its point.
"""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, Union

import numpy as np
import structlog
from pydantic import Field, model_validator
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from prism import metrics
from prism.errors import DeadlineExceeded, InvalidInput, NotFound, Unavailable
from prism.lexical import SparseTerms, sparse_vector_params
from prism.settings import ServiceSettings
from prism.vectors import maxsim, normalized_mean

if TYPE_CHECKING:
    from prism.edge_index import EdgeProductIndex

log = structlog.get_logger(__name__)

POINT_NAMESPACE = uuid.UUID("6f1c2d9e-4b7a-5c3e-9a8d-2e5f7b1c0d4a")
# Attributes that are facets/filters in a fashion catalog; any other attribute is still stored and
# filterable (Qdrant filters unindexed payload too), just without a payload index on a server.
DEFAULT_INDEXED_ATTRIBUTES = (
    "type",
    "group",
    "colour",
    "gender",
    "category",
    "pattern",
    "season",
    "usage",
    "department",
    "index",
    "section",
    "product_code",
    "brand",
)
FILTER_FIELD_RE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class IndexedServiceSettings(ServiceSettings):
    """Settings of a service that opens the product index (gateway, fusion); env prefix per subclass."""

    # Vector index: a Qdrant server URL, or embedded on a folder (or in memory when neither is set).
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    # A slow index fails the call (504) after this long instead of holding it.
    qdrant_timeout_s: int = 5
    index_path: Path | None = Path("var/index")
    collection: str = "products"
    # Embedded engine when no qdrant_url: "local" (exact search, fine to ~100k products) or "edge"
    # (Qdrant's engine in-process with an HNSW index, for up to millions: prism.edge_index).
    index_engine: str = "local"
    # A Qdrant server cluster: how the collection is distributed when this service creates it (the
    # fusion service does, on first start; an existing collection keeps its own). None: the server's
    # default (auto sharding: one shard per node; one copy of each shard; a write succeeds on one).
    qdrant_shard_number: int | None = Field(default=None, ge=1)
    qdrant_replication_factor: int | None = Field(default=None, ge=1)
    # Copies of a shard that must apply a write before it succeeds (at most the replication factor).
    qdrant_write_consistency_factor: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _writes_can_succeed(self) -> Self:
        replicas = self.qdrant_replication_factor or 1
        if self.qdrant_write_consistency_factor is not None and self.qdrant_write_consistency_factor > replicas:
            raise ValueError(
                f"qdrant_write_consistency_factor {self.qdrant_write_consistency_factor} exceeds the "
                f"{replicas} replica(s) of each shard: no write could succeed"
            )
        return self

    def index_settings(self) -> IndexSettings:
        return IndexSettings(
            collection=self.collection,
            url=self.qdrant_url,
            api_key=self.qdrant_api_key,
            path=None if self.qdrant_url else self.index_path,
            engine=self.index_engine,
            timeout_s=float(self.qdrant_timeout_s),
            shard_number=self.qdrant_shard_number,
            replication_factor=self.qdrant_replication_factor,
            write_consistency_factor=self.qdrant_write_consistency_factor,
        )


def vectors_by_product(records: Iterable[Any], names: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Product id -> {vector name: array} of retrieved points (either engine's records)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for r in records:
        vecs = r.vector if isinstance(r.vector, dict) else {}
        out[str((r.payload or {}).get("product_id"))] = {
            n: np.asarray(v, dtype=np.float32) for n, v in vecs.items() if n in names and v is not None
        }
    return out


def point_id(product_id: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, product_id))


@dataclass(frozen=True)
class IndexSettings:
    collection: str = "products"
    url: str | None = None  # Qdrant server; None -> embedded
    api_key: str | None = None
    path: Path | None = None  # embedded on disk; None (and no url) -> in memory
    timeout_s: float = 10.0
    # Embedded engine: "local" is qdrant-client's local mode (exact search, ProductIndex), "edge"
    # is Qdrant's engine in-process with HNSW (EdgeProductIndex, prism.edge_index) for large
    # catalogs.  Ignored with a url: a server is always ProductIndex.
    engine: str = "local"
    # Distribution of a new collection over a server cluster (None: the server's default); the
    # embedded engines are one shard with one copy and ignore them.
    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None

    def distribution(self) -> dict[str, int]:
        """The keyword arguments of ``QdrantClient.create_collection`` that distribute the collection."""
        fields = {
            "shard_number": self.shard_number,
            "replication_factor": self.replication_factor,
            "write_consistency_factor": self.write_consistency_factor,
        }
        return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class ScoredProduct:
    product_id: str
    score: float
    payload: dict[str, Any]


def open_client(settings: IndexSettings) -> QdrantClient:
    if settings.url:
        return QdrantClient(url=settings.url, api_key=settings.api_key, timeout=int(settings.timeout_s))
    if settings.path is not None:
        settings.path.mkdir(parents=True, exist_ok=True)
        return QdrantClient(path=str(settings.path))
    return QdrantClient(location=":memory:")


def _check_field(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= FILTER_FIELD_RE_CHARS:
        raise InvalidInput(f"unknown filter field {name!r}", code="invalid_filter")
    return name


def build_filter(
    any_of: Mapping[str, Sequence[str]] | None = None,
    *,
    price_min: float | None = None,
    price_max: float | None = None,
    exclude_ids: Iterable[str] = (),
    must_not_match: Mapping[str, str] | None = None,
) -> qm.Filter | None:
    """Translate API filters into a Qdrant filter (values are matched exactly, never interpreted)."""
    must: list[qm.Condition] = []
    for key, values in (any_of or {}).items():
        vals = [str(v) for v in values if str(v)]
        if not vals:
            continue
        if len(vals) > 100 or any(len(v) > 200 for v in vals):
            raise InvalidInput(f"filter {key!r}: at most 100 values of 200 characters", code="invalid_filter")
        must.append(qm.FieldCondition(key=f"attributes.{_check_field(key)}", match=qm.MatchAny(any=vals)))
    if price_min is not None or price_max is not None:
        must.append(qm.FieldCondition(key="price", range=qm.Range(gte=price_min, lte=price_max)))
    must_not: list[qm.Condition] = []
    ids: list[int | str | uuid.UUID] = [point_id(i) for i in exclude_ids]
    if ids:
        must_not.append(qm.HasIdCondition(has_id=ids))
    for key, value in (must_not_match or {}).items():
        must_not.append(qm.FieldCondition(key=f"attributes.{_check_field(key)}", match=qm.MatchValue(value=value)))
    if not must and not must_not:
        return None
    return qm.Filter(must=must or None, must_not=must_not or None)


def narrowed(base: qm.Filter | None, values: Mapping[str, str]) -> qm.Filter:
    """``base`` (a request's filter, or none) and, in addition, every attribute in ``values`` at
    exactly that value: the candidates a "similar products" attribute boost favours."""
    extra: list[qm.Condition] = [
        qm.FieldCondition(key=f"attributes.{_check_field(k)}", match=qm.MatchValue(value=v))
        for k, v in sorted(values.items())
    ]
    must = [*(base.must if base is not None and isinstance(base.must, list) else []), *extra]
    return qm.Filter(must=must, must_not=base.must_not if base is not None else None)


def _payload_selector(with_payload: Sequence[str] | bool) -> list[str] | bool:
    return with_payload if isinstance(with_payload, bool) else list(with_payload)


def _scored(payload: Mapping[str, Any] | None, score: float) -> ScoredProduct:
    p = dict(payload or {})
    return ScoredProduct(product_id=str(p.get("product_id", "")), score=score, payload=p)


class _Serialized:
    """Proxy that serialises every call to an embedded Qdrant client.

    Local mode keeps its collections in plain Python structures that are not safe to mutate while
    another thread searches them; a Qdrant server handles concurrency itself and is not wrapped.
    """

    def __init__(self, client: QdrantClient) -> None:
        self._client = client
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        lock = self._lock

        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return attr(*args, **kwargs)

        return call


class _Guarded:
    """Proxy over a Qdrant *server* client: a slow or unreachable server becomes DeadlineExceeded or
    Unavailable (504 / 503 with a reason at the gateway), never a hang or an anonymous 500."""

    def __init__(self, client: QdrantClient, url: str, timeout_s: float) -> None:
        self._client = client
        self._url = url
        self._timeout_s = timeout_s

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            import httpx
            from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

            try:
                return attr(*args, **kwargs)
            except (ResponseHandlingException, httpx.TransportError) as exc:
                cause = exc.source if isinstance(exc, ResponseHandlingException) else exc
                if isinstance(cause, httpx.TimeoutException):
                    raise DeadlineExceeded(
                        f"vector index at {self._url} did not answer within {self._timeout_s:g} s"
                    ) from exc
                raise Unavailable(f"vector index at {self._url} unreachable: {type(cause).__name__}") from exc
            except UnexpectedResponse as exc:
                if exc.status_code is not None and exc.status_code >= 500:
                    raise Unavailable(f"vector index at {self._url} failed: HTTP {exc.status_code}") from exc
                raise

        return call


class ProductIndex:
    """Thin, typed wrapper over one Qdrant collection of products."""

    def __init__(self, client: QdrantClient, settings: IndexSettings) -> None:
        self.client: Any = (
            _Serialized(client) if settings.url is None else _Guarded(client, settings.url, settings.timeout_s)
        )
        self.settings = settings
        self.collection = settings.collection
        self.embedded = settings.url is None
        self._dense_names: frozenset[str] | None = None

    @classmethod
    def open(cls, settings: IndexSettings) -> ProductIndex:
        return cls(open_client(settings), settings)

    def close(self) -> None:
        self.client.close()

    # -- schema -----------------------------------------------------------------------------
    def ensure_collection(
        self,
        vectors: Mapping[str, int],
        multivector: Collection[str] = (),
        sparse: Collection[str] = (),
        indexed_attributes: Sequence[str] = DEFAULT_INDEXED_ATTRIBUTES,
    ) -> bool:
        """Create the collection with these named vectors (cosine) unless it exists; returns True if created.

        Names in ``multivector`` hold several vectors per point (views of a photo) compared by MaxSim.
        An existing collection with other vector names, sizes or kinds is refused: mixing models in
        one index would silently compare vectors from different spaces.
        """
        want = {name: (dim, name in multivector) for name, dim in vectors.items()}
        if self.client.collection_exists(self.collection):
            current = self.client.get_collection(self.collection).config.params.vectors
            have = (
                {k: (v.size, v.multivector_config is not None) for k, v in current.items()}
                if isinstance(current, dict)
                else {}
            )
            have_sparse = set((self.client.get_collection(self.collection).config.params.sparse_vectors or {}).keys())
            if have != want or have_sparse != set(sparse):
                raise RuntimeError(
                    f"collection {self.collection!r} has vectors {have}, this configuration needs {want}; "
                    "use another collection name or a fresh index folder"
                )
            return False
        self.client.create_collection(
            self.collection,
            vectors_config={
                name: qm.VectorParams(
                    size=dim,
                    distance=qm.Distance.COSINE,
                    on_disk=False,
                    multivector_config=(
                        qm.MultiVectorConfig(comparator=qm.MultiVectorComparator.MAX_SIM) if multi else None
                    ),
                )
                for name, (dim, multi) in want.items()
            },
            sparse_vectors_config={name: sparse_vector_params() for name in sparse} or None,
            hnsw_config=qm.HnswConfigDiff(m=16, ef_construct=128),
            # Shards and replicas on a server cluster; local mode accepts and ignores them.
            **self.settings.distribution(),
        )
        fields: list[tuple[str, qm.PayloadSchemaType]] = [
            (f"attributes.{a}", qm.PayloadSchemaType.KEYWORD) for a in indexed_attributes
        ]
        fields += [("product_id", qm.PayloadSchemaType.KEYWORD), ("price", qm.PayloadSchemaType.FLOAT)]
        for name, schema in fields:
            with warnings.catch_warnings():
                # Local mode accepts payload indexes and warns that it ignores them; servers use them.
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                self.client.create_payload_index(self.collection, name, schema)
        log.info("index.created", collection=self.collection, vectors=dict(vectors), **self.settings.distribution())
        return True

    def dense_names(self) -> frozenset[str]:
        """Names of the collection's dense vectors (empty while it does not exist).

        Read once: a collection's layout never changes (ensure_collection refuses another)."""
        if self._dense_names is None:
            if not self.client.collection_exists(self.collection):
                return frozenset()
            current = self.client.get_collection(self.collection).config.params.vectors
            self._dense_names = frozenset(current) if isinstance(current, dict) else frozenset()
        return self._dense_names

    # -- writes -----------------------------------------------------------------------------
    def upsert(self, items: Sequence[tuple[str, Mapping[str, np.ndarray | SparseTerms], dict[str, Any]]]) -> None:
        """Upsert (product id, named vectors, payload) triples; one point per product."""
        if not items:
            return
        points = [
            qm.PointStruct(
                id=point_id(pid),
                vector={
                    name: vec.to_qdrant()
                    if isinstance(vec, SparseTerms)
                    else np.asarray(vec, dtype=np.float32).tolist()
                    for name, vec in vecs.items()
                },
                payload={**payload, "product_id": pid},
            )
            for pid, vecs, payload in items
        ]
        self.client.upsert(self.collection, points=points, wait=True)

    def delete(self, product_ids: Sequence[str]) -> None:
        if product_ids:
            self.client.delete(
                self.collection, points_selector=qm.PointIdsList(points=[point_id(p) for p in product_ids]), wait=True
            )

    # -- reads ------------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def publish_size(self) -> None:
        """Set the index-size gauge (an exact count: once per ingest, not per upserted batch)."""
        metrics.INDEX_POINTS.labels(self.collection).set(self.count())

    def payloads(self, product_ids: Sequence[str], fields: Sequence[str] | bool = True) -> dict[str, dict[str, Any]]:
        """Payloads of the products that exist, keyed by product id."""
        if not product_ids:
            return {}
        recs = self.client.retrieve(
            self.collection,
            [point_id(p) for p in product_ids],
            with_payload=list(fields) if not isinstance(fields, bool) else fields,
        )
        by_point = {point_id(p): p for p in product_ids}
        return {by_point[str(r.id)]: dict(r.payload or {}) for r in recs}

    def vectors(self, product_ids: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        """Stored dense vectors (``names``) of the products that exist: a text-only update keeps them."""
        if not product_ids or not names:
            return {}
        recs = self.client.retrieve(
            self.collection, [point_id(p) for p in product_ids], with_payload=["product_id"], with_vectors=list(names)
        )
        return vectors_by_product(recs, names)

    def get(self, product_id: str) -> dict[str, Any]:
        found = self.payloads([product_id])
        if product_id not in found:
            raise NotFound(f"no product {product_id!r}")
        return found[product_id]

    def search(
        self,
        using: str,
        query: np.ndarray | str | SparseTerms,
        *,
        limit: int,
        offset: int = 0,
        query_filter: qm.Filter | None = None,
        with_payload: Sequence[str] | bool = True,
        candidates: int = 200,
    ) -> list[ScoredProduct]:
        """Nearest products by one named vector; ``query`` is a vector or a product id (query by id).

        A (views, dim) query searches ``using`` with the views' mean for ``candidates`` products,
        then rescores them by MaxSim against the ``<using>_views`` multivector: Qdrant's
        prefetch-and-rescore pattern (natively on a server; client-side in local mode, whose
        multivector scoring loops over every point in Python).
        """
        if isinstance(query, np.ndarray) and query.ndim == 2:
            return self._search_views(using, query, limit, offset, query_filter, with_payload, candidates)
        if isinstance(query, SparseTerms):
            if not len(query):
                return []  # no known term: nothing matches lexically
            q: Any = query.to_qdrant()
        elif isinstance(query, str):
            q = point_id(query)
        else:
            q = np.asarray(query, dtype=np.float32).tolist()
        res = self.client.query_points(
            self.collection,
            query=q,
            using=using,
            limit=limit,
            offset=offset,
            query_filter=query_filter,
            with_payload=_payload_selector(with_payload),
        )
        return [_scored(p.payload, float(p.score)) for p in res.points]

    def _search_views(
        self,
        using: str,
        views: np.ndarray,
        limit: int,
        offset: int,
        query_filter: qm.Filter | None,
        with_payload: Sequence[str] | bool,
        candidates: int,
    ) -> list[ScoredProduct]:
        field = f"{using}_views"
        mean = normalized_mean(views).tolist()
        pool = max(candidates, offset + limit)
        if not self.embedded:
            res = self.client.query_points(
                self.collection,
                prefetch=qm.Prefetch(query=mean, using=using, limit=pool, filter=query_filter),
                query=views.tolist(),
                using=field,
                limit=limit,
                offset=offset,
                with_payload=_payload_selector(with_payload),
            )
            return [_scored(p.payload, float(p.score) / len(views)) for p in res.points]
        first = self.client.query_points(
            self.collection,
            query=mean,
            using=using,
            limit=pool,
            query_filter=query_filter,
            with_payload=_payload_selector(with_payload),
            with_vectors=[field],
        )
        scored = []
        for p in first.points:
            doc = (p.vector or {}).get(field) if isinstance(p.vector, dict) else None
            score = maxsim(views, np.asarray(doc, dtype=np.float32)) if doc else float(p.score)
            scored.append(_scored(p.payload, score))
        scored.sort(key=lambda s: (-s.score, s.product_id))
        return scored[offset : offset + limit]

    def scroll_ids(self, query_filter: qm.Filter | None = None) -> list[str]:
        ids: list[str] = []
        offset: Any = None
        while True:
            recs, offset = self.client.scroll(
                self.collection, scroll_filter=query_filter, limit=1000, offset=offset, with_payload=["product_id"]
            )
            ids.extend(str((r.payload or {}).get("product_id")) for r in recs)
            if offset is None:
                return ids


# Either embedded engine (or a server client): the same public interface.
AnyIndex = Union[ProductIndex, "EdgeProductIndex"]


def open_index(settings: IndexSettings) -> ProductIndex | EdgeProductIndex:
    """The index ``settings`` select: a Qdrant server or local mode (ProductIndex), or the edge engine."""
    if settings.url or settings.engine == "local":
        return ProductIndex.open(settings)
    if settings.engine == "edge":
        from prism.edge_index import EdgeProductIndex  # imports the engine only when chosen

        return EdgeProductIndex.open(settings)
    raise ValueError(f"unknown index engine {settings.engine!r}: use 'local' or 'edge'")
