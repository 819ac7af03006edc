"""The product index on Qdrant Edge: Qdrant's Rust engine in-process, with HNSW (approximate search).

``ProductIndex`` in embedded mode runs on qdrant-client's local mode, which scores every point in
Python-side numpy for every query (~0.2 s a query at 100k products): fine for a demo catalog, far
too slow at 1M.  ``EdgeProductIndex`` has the same public interface over one ``qdrant_edge.EdgeShard``
in a folder, which is the server's storage and search code (segments, payload indexes, HNSW) as a
library.  Select it with ``IndexSettings(engine="edge")`` and ``prism.index.open_index``.

What it supports, all natively in the engine: dense named vectors (cosine), multivectors compared
by MaxSim (a photo's views, used only to rescore, so they get no HNSW graph), sparse vectors with
the IDF modifier (BM25), every filter ``prism.index.build_filter`` makes (and most other
``qdrant_client.models.Filter`` conditions, translated in ``to_edge_filter``), query by product id,
prefetch-and-rescore for (views, dim) queries exactly as a Qdrant server does it.

The HNSW graph is built by ``optimize()``: the engine does not index in the background.  Points
upserted since the last build are still found (their segment is searched exactly), only slower;
``optimize()`` runs by itself once enough unindexed points accumulated (``EdgeTuning``), and a
bulk loader should switch that off and call ``optimize()`` once at the end.

Not supported: a Qdrant server (``url``; use ``ProductIndex``), an in-memory index (without a
``path`` the shard lives in a temporary folder removed on ``close``), and ``SliceCondition`` filters.
The folder is locked to one process, like local mode's.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe
import structlog
from qdrant_client import models as qm

from prism import metrics
from prism.errors import InvalidInput, NotFound
from prism.index import DEFAULT_INDEXED_ATTRIBUTES, IndexSettings, ScoredProduct, point_id, vectors_by_product
from prism.lexical import SparseTerms
from prism.vectors import normalized_mean

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Written next to the shard: the vector layout Prism created it with.  The engine's own
# edge_config.json is its private format; this one is what ensure_collection compares against.
SCHEMA_FILE = "prism-schema.json"


@dataclass(frozen=True)
class EdgeTuning:
    """HNSW and optimizer knobs (``make bench`` measured these defaults at 1M × 384-d, README).

    Sizes are in KB of vector data, as the engine counts them: a 384-d float32 vector is 1.5 KB.
    """

    m: int = 16  # graph degree: recall vs memory and build time
    ef_construct: int = 128  # candidates while building: recall vs build time
    hnsw_ef: int = 64  # candidates while searching: recall vs latency, per query
    # A segment below this is searched exactly (no graph); so is a filter matching fewer points.
    full_scan_threshold_kb: int = 10_000
    # optimize() builds a graph for segments above this size.
    indexing_threshold_kb: int = 10_000
    # Auto-build when this many points were upserted since the last optimize() and they are at
    # least ``auto_optimize_fraction`` of the collection: the geometric schedule keeps repeated
    # builds during a long ingest to a constant factor of one build.  0 switches it off.
    auto_optimize_points: int = 50_000
    auto_optimize_fraction: float = 0.25
    max_indexing_threads: int = 0  # 0: the engine picks (all cores)


@dataclass(frozen=True)
class _Schema:
    vectors: dict[str, int]
    multivector: frozenset[str]
    sparse: frozenset[str]

    def to_json(self) -> str:
        return json.dumps(
            {"vectors": self.vectors, "multivector": sorted(self.multivector), "sparse": sorted(self.sparse)},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> _Schema:
        raw = json.loads(text)
        return cls(
            vectors={str(k): int(v) for k, v in raw["vectors"].items()},
            multivector=frozenset(raw["multivector"]),
            sparse=frozenset(raw["sparse"]),
        )


def _point_uuid(pid: qe.PointId) -> str:
    # The engine hands UUID ids back as uuid.UUID; Prism's point ids are their str().
    return str(pid)


class EdgeProductIndex:
    """``ProductIndex``'s interface over a Qdrant Edge shard (one collection = one shard folder)."""

    def __init__(self, settings: IndexSettings, tuning: EdgeTuning | None = None) -> None:
        if settings.url:
            raise ValueError("the edge engine is embedded only; use ProductIndex for a Qdrant server (url)")
        self.settings = settings
        self.tuning = tuning or EdgeTuning()
        self.collection = settings.collection
        self.embedded = True
        # One lock for every engine call.  The shard's bindings hold the GIL during long calls
        # (optimize() runs minutes at 1M and no other Python thread runs meanwhile), and the
        # schema/counter bookkeeping here must not interleave with a reload or close.
        self._lock = threading.RLock()
        self._tmp: str | None = None
        if settings.path is None:
            self._tmp = tempfile.mkdtemp(prefix="prism-edge-")
            root = Path(self._tmp)
        else:
            root = settings.path
        # A folder of its own under ``path``: local mode keeps its collections directly in ``path``.
        self.folder = root / "edge" / self.collection
        self._shard: qe.EdgeShard | None = None
        self._schema: _Schema | None = None
        self._pending = 0  # points upserted since the last optimize(), for the auto-build

    @classmethod
    def open(cls, settings: IndexSettings, tuning: EdgeTuning | None = None) -> EdgeProductIndex:
        """Open the index; an existing shard in the folder is loaded now, a new one is made by ensure_collection."""
        index = cls(settings, tuning)
        schema_file = index.folder / SCHEMA_FILE
        if schema_file.is_file():
            index._schema = _Schema.from_json(schema_file.read_text())
            index._shard = qe.EdgeShard.load(str(index.folder))
        return index

    def close(self) -> None:
        with self._lock:
            if self._shard is not None:
                self._shard.flush()
                self._shard.close()
                self._shard = None
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def _call(self, fn: Callable[[qe.EdgeShard], T]) -> T:
        with self._lock:
            if self._shard is None:
                raise RuntimeError(f"collection {self.collection!r} does not exist yet: call ensure_collection first")
            return fn(self._shard)

    # -- schema -----------------------------------------------------------------------------
    def ensure_collection(
        self,
        vectors: Mapping[str, int],
        multivector: Collection[str] = (),
        sparse: Collection[str] = (),
        indexed_attributes: Sequence[str] = DEFAULT_INDEXED_ATTRIBUTES,
    ) -> bool:
        """Create the shard with these named vectors (cosine) unless it exists; returns True if created.

        Same contract as ``ProductIndex.ensure_collection``: an existing shard with other vector
        names, sizes or kinds is refused rather than mixing vectors from different models.
        """
        want = _Schema(dict(vectors), frozenset(multivector), frozenset(sparse))
        with self._lock:
            if self._schema is not None:
                if self._schema != want:
                    raise RuntimeError(
                        f"collection {self.collection!r} has vectors {self._schema.to_json()}, this configuration "
                        f"needs {want.to_json()}; use another collection name or a fresh index folder"
                    )
                return False
            if self.folder.exists() and any(self.folder.iterdir()):
                raise RuntimeError(f"{self.folder} holds data that is not a Prism edge index; use a fresh folder")
            t = self.tuning
            no_graph = qe.HnswIndexConfig(
                m=0, ef_construct=t.ef_construct, full_scan_threshold=t.full_scan_threshold_kb
            )
            config = qe.EdgeConfig(
                vectors={
                    name: qe.EdgeVectorParams(
                        size=dim,
                        distance=qe.Distance.Cosine,
                        multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
                        if name in want.multivector
                        else None,
                        # Views only rescore candidates found through the mean vector; a graph
                        # over every view of every photo would cost build time and serve nothing.
                        hnsw_config=no_graph if name in want.multivector else None,
                    )
                    for name, dim in want.vectors.items()
                },
                # The IDF modifier makes the dot product BM25 (see prism.lexical.Bm25Encoder).
                sparse_vectors={name: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf) for name in want.sparse},
                hnsw_config=qe.HnswIndexConfig(
                    m=t.m,
                    ef_construct=t.ef_construct,
                    full_scan_threshold=t.full_scan_threshold_kb,
                    max_indexing_threads=t.max_indexing_threads,
                ),
                optimizers=qe.EdgeOptimizersConfig(indexing_threshold=t.indexing_threshold_kb),
            )
            self.folder.mkdir(parents=True, exist_ok=True)
            shard = qe.EdgeShard.create(str(self.folder), config)
            # Payload indexes let the engine plan filtered searches (small filtered sets are
            # scored exactly, large ones walk the graph), as on a server.
            fields: list[tuple[str, qe.PayloadSchemaType]] = [
                (f"attributes.{a}", qe.PayloadSchemaType.Keyword) for a in indexed_attributes
            ]
            fields += [("product_id", qe.PayloadSchemaType.Keyword), ("price", qe.PayloadSchemaType.Float)]
            for name, schema in fields:
                shard.update(qe.UpdateOperation.create_field_index(name, schema))
            shard.flush()
            tmp = self.folder / (SCHEMA_FILE + ".tmp")
            tmp.write_text(want.to_json())
            tmp.replace(self.folder / SCHEMA_FILE)
            self._shard, self._schema = shard, want
        log.info("index.created", collection=self.collection, vectors=dict(vectors), engine="edge")
        return True

    def optimize(self) -> bool:
        """Build HNSW graphs (and merge/vacuum segments); blocks until done. True if anything changed.

        Minutes at 1M vectors on 2 cores, during which the index (and, since the engine holds the
        GIL, the whole process) waits: run it after a bulk load, not on a serving path.
        """
        with self._lock:
            changed = self._call(lambda s: s.optimize())
            self._call(lambda s: s.flush())
            self._pending = 0
        return changed

    def indexed_count(self) -> int:
        """Vectors covered by an HNSW graph (summed over named vectors): what optimize() has built so far."""
        with self._lock:
            return 0 if self._shard is None else int(self._shard.info().indexed_vectors_count)

    # -- writes -----------------------------------------------------------------------------
    def _dense(self, name: str, vec: np.ndarray) -> list[float] | list[list[float]]:
        schema = self._require_schema()
        dim = schema.vectors.get(name)
        if dim is None:
            raise InvalidInput(f"unknown vector {name!r}", code="unknown_vector")
        arr = np.asarray(vec, dtype=np.float32)
        want_ndim = 2 if name in schema.multivector else 1
        if arr.ndim != want_ndim or arr.shape[-1] != dim or arr.size == 0:
            raise InvalidInput(
                f"vector {name!r} must have shape {'(n, ' if want_ndim == 2 else '('}{dim}), got {arr.shape}",
                code="invalid_vector",
            )
        if not np.isfinite(arr).all():
            raise InvalidInput(f"vector {name!r} has NaN or infinite values", code="invalid_vector")
        out: list[float] | list[list[float]] = arr.tolist()
        return out

    def _sparse(self, name: str, vec: SparseTerms) -> qe.SparseVector:
        if name not in self._require_schema().sparse:
            raise InvalidInput(f"unknown sparse vector {name!r}", code="unknown_vector")
        return qe.SparseVector(list(vec.indices), list(vec.values))

    def dense_names(self) -> frozenset[str]:
        """Names of the collection's dense vectors (empty before ensure_collection)."""
        return frozenset(self._schema.vectors) if self._schema is not None else frozenset()

    def _require_schema(self) -> _Schema:
        if self._schema is None:
            raise RuntimeError(f"collection {self.collection!r} does not exist yet: call ensure_collection first")
        return self._schema

    def upsert(self, items: Sequence[tuple[str, Mapping[str, np.ndarray | SparseTerms], dict[str, Any]]]) -> None:
        """Upsert (product id, named vectors, payload) triples; one point per product."""
        if not items:
            return
        with self._lock:
            points = [
                qe.Point(
                    point_id(pid),
                    {
                        name: self._sparse(name, vec) if isinstance(vec, SparseTerms) else self._dense(name, vec)
                        for name, vec in vecs.items()
                    },
                    {**payload, "product_id": pid},
                )
                for pid, vecs, payload in items
            ]
            self._call(lambda s: s.update(qe.UpdateOperation.upsert_points(points)))
            self._pending += len(points)
            t = self.tuning
            if t.auto_optimize_points > 0 and self._pending >= max(
                t.auto_optimize_points, t.auto_optimize_fraction * self.count()
            ):
                log.info("index.auto_optimize", collection=self.collection, unindexed=self._pending)
                self.optimize()

    def delete(self, product_ids: Sequence[str]) -> None:
        if product_ids:
            ids: list[qe.PointId] = [point_id(p) for p in product_ids]
            self._call(lambda s: s.update(qe.UpdateOperation.delete_points(ids)))

    # -- reads ------------------------------------------------------------------------------
    def count(self) -> int:
        with self._lock:
            if self._shard is None:
                return 0  # no collection yet reads as an empty one
            return int(self._shard.count(qe.CountRequest(exact=True)))

    def publish_size(self) -> None:
        """Set the index-size gauge (an exact count: once per ingest, not per upserted batch)."""
        metrics.INDEX_POINTS.labels(self.collection).set(self.count())

    def payloads(self, product_ids: Sequence[str], fields: Sequence[str] | bool = True) -> dict[str, dict[str, Any]]:
        """Payloads of the products that exist, keyed by product id."""
        if not product_ids:
            return {}
        by_point = {point_id(p): p for p in product_ids}
        ids: list[qe.PointId] = list(by_point)
        selector: qe.WithPayloadType = fields if isinstance(fields, bool) else list(fields)
        with self._lock:
            if self._shard is None:
                return {}  # no collection yet: no product exists
            recs = self._shard.retrieve(ids, with_payload=selector, with_vector=False)
        return {by_point[_point_uuid(r.id)]: dict(r.payload or {}) for r in recs}

    def vectors(self, product_ids: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        """Stored dense vectors (``names``) of the products that exist: a text-only update keeps them."""
        if not product_ids or not names:
            return {}
        ids: list[qe.PointId] = [point_id(p) for p in product_ids]
        with self._lock:
            if self._shard is None:
                return {}
            recs = self._shard.retrieve(ids, with_payload=["product_id"], with_vector=list(names))
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

        Query by id searches with the product's stored ``using`` vector and leaves the product
        itself out, as Qdrant's query by id does.  A (views, dim) query finds ``candidates``
        products by the views' mean on ``using`` and rescores them by MaxSim against the
        ``<using>_views`` multivector, in the engine (a server's prefetch-and-rescore); products
        without views drop out of that stage, as on a server.
        """
        flt = to_edge_filter(query_filter)
        payload_sel: qe.WithPayloadType = with_payload if isinstance(with_payload, bool) else list(with_payload)
        with self._lock:
            if self._shard is None:
                return []
            schema = self._require_schema()
            params = qe.SearchParams(hnsw_ef=max(self.tuning.hnsw_ef, offset + limit))
            if isinstance(query, np.ndarray) and query.ndim == 2:
                views_field = f"{using}_views"
                views = self._dense(views_field, query)
                pool = max(candidates, offset + limit)
                mean = self._dense(using, normalized_mean(query))
                request = qe.QueryRequest(
                    limit=limit,
                    offset=offset,
                    prefetches=[
                        qe.Prefetch(limit=pool, query=qe.Query.Nearest(mean, using=using), filter=flt, params=params)
                    ],
                    query=qe.Query.Nearest(views, using=views_field),
                    with_payload=payload_sel,
                )
                found = self._call(lambda s: s.query(request))
                # The engine sums MaxSim over query views; Prism reads it as a mean (a cosine).
                return [self._scored(p.payload, p.score / len(views)) for p in found]
            vector: qe.NamedVector
            if isinstance(query, SparseTerms):
                if not len(query):
                    return []  # no known term: nothing matches lexically
                vector = self._sparse(using, query)
            elif isinstance(query, str):
                vector = self._stored_vector(using, query)
                own = qe.HasIdCondition({point_id(query)})
                flt = qe.Filter(must=[flt] if flt is not None else None, must_not=[own])
            else:
                if using not in schema.vectors or using in schema.multivector:
                    raise InvalidInput(f"unknown dense vector {using!r}", code="unknown_vector")
                vector = self._dense(using, query)
            request = qe.QueryRequest(
                limit=limit,
                offset=offset,
                query=qe.Query.Nearest(vector, using=using),
                filter=flt,
                params=None if using in schema.sparse else params,
                with_payload=payload_sel,
            )
            found = self._call(lambda s: s.query(request))
        return [self._scored(p.payload, p.score) for p in found]

    def _stored_vector(self, using: str, product_id: str) -> qe.NamedVector:
        schema = self._require_schema()
        if using not in schema.vectors and using not in schema.sparse:
            raise InvalidInput(f"unknown vector {using!r}", code="unknown_vector")
        recs = self._call(lambda s: s.retrieve([point_id(product_id)], with_payload=False, with_vector=[using]))
        if not recs:
            raise NotFound(f"no product {product_id!r}")
        stored = recs[0].vector
        vec = stored.get(using) if isinstance(stored, dict) else None
        if vec is None:
            raise NotFound(f"product {product_id!r} has no {using!r} vector")
        return vec

    @staticmethod
    def _scored(payload: Mapping[str, Any] | None, score: float) -> ScoredProduct:
        p = dict(payload or {})
        return ScoredProduct(product_id=str(p.get("product_id", "")), score=float(score), payload=p)

    def scroll_ids(self, query_filter: qm.Filter | None = None) -> list[str]:
        flt = to_edge_filter(query_filter)
        ids: list[str] = []
        offset: qe.PointId | None = None
        with self._lock:
            if self._shard is None:
                return []
            while True:
                request = qe.ScrollRequest(offset=offset, limit=1000, filter=flt, with_payload=["product_id"])
                recs, offset = self._shard.scroll(request)
                ids.extend(str((r.payload or {}).get("product_id")) for r in recs)
                if offset is None:
                    return ids


# -- filters ------------------------------------------------------------------------------------
# qdrant_client's Filter and the engine's Filter describe the same thing (the engine is the
# server's code); the gateway builds the former, so it is translated field by field here.


def to_edge_filter(flt: qm.Filter | None) -> qe.Filter | None:
    """Translate a ``qdrant_client.models.Filter`` into the engine's; unsupported conditions raise TypeError."""
    if flt is None:
        return None
    min_should = None
    if flt.min_should is not None:
        min_should = qe.MinShould(_conditions(flt.min_should.conditions) or [], flt.min_should.min_count)
    return qe.Filter(
        must=_conditions(flt.must),
        should=_conditions(flt.should),
        must_not=_conditions(flt.must_not),
        min_should=min_should,
    )


def _conditions(conds: Any) -> list[qe.ConditionType] | None:
    if conds is None:
        return None
    items = conds if isinstance(conds, list) else [conds]
    return [_condition(c) for c in items]


def _condition(c: Any) -> qe.ConditionType:
    if isinstance(c, qm.Filter):
        out = to_edge_filter(c)
        assert out is not None
        return out
    if isinstance(c, qm.FieldCondition):
        return qe.FieldCondition(
            c.key,
            match=_match(c.match),
            range=_range(c.range),
            geo_bounding_box=_geo_box(c.geo_bounding_box),
            geo_radius=_geo_radius(c.geo_radius),
            geo_polygon=_geo_polygon(c.geo_polygon),
            values_count=(
                qe.ValuesCount(
                    lt=c.values_count.lt, gt=c.values_count.gt, lte=c.values_count.lte, gte=c.values_count.gte
                )
                if c.values_count is not None
                else None
            ),
            is_empty=c.is_empty,
            is_null=c.is_null,
        )
    if isinstance(c, qm.HasIdCondition):
        return qe.HasIdCondition({str(i) if isinstance(i, uuid.UUID) else i for i in c.has_id})
    if isinstance(c, qm.IsEmptyCondition):
        return qe.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, qm.IsNullCondition):
        return qe.IsNullCondition(c.is_null.key)
    if isinstance(c, qm.HasVectorCondition):
        return qe.HasVectorCondition(c.has_vector)
    if isinstance(c, qm.NestedCondition):
        inner = to_edge_filter(c.nested.filter)
        assert inner is not None
        return qe.NestedCondition(c.nested.key, inner)
    raise TypeError(f"filter condition {type(c).__name__} is not supported by the edge index")


def _match(m: Any) -> qe.MatchType | None:
    if m is None:
        return None
    if isinstance(m, qm.MatchValue):
        return qe.MatchValue(m.value)
    if isinstance(m, qm.MatchAny):
        return qe.MatchAny(_values(m.any))
    if isinstance(m, qm.MatchExcept):
        return qe.MatchExcept(_values(m.except_))
    if isinstance(m, qm.MatchText):
        return qe.MatchText(m.text)
    if isinstance(m, qm.MatchTextAny):
        return qe.MatchTextAny(m.text_any)
    if isinstance(m, qm.MatchPhrase):
        return qe.MatchPhrase(m.phrase)
    raise TypeError(f"match {type(m).__name__} is not supported by the edge index")


def _values(values: Sequence[Any]) -> list[str] | list[int]:
    # Qdrant matches keywords or integers, never a mix of both in one condition.
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return [int(v) for v in values]
    return [str(v) for v in values]


def _range(r: Any) -> qe.RangeType | None:
    if r is None:
        return None
    if isinstance(r, qm.Range):
        return qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
    if isinstance(r, qm.DatetimeRange):

        def iso(v: Any) -> str | None:
            return None if v is None else v.isoformat() if hasattr(v, "isoformat") else str(v)

        return qe.RangeDateTime(gte=iso(r.gte), gt=iso(r.gt), lte=iso(r.lte), lt=iso(r.lt))
    raise TypeError(f"range {type(r).__name__} is not supported by the edge index")


def _geo_point(p: qm.GeoPoint) -> qe.GeoPoint:
    return qe.GeoPoint(lon=p.lon, lat=p.lat)


def _geo_box(g: qm.GeoBoundingBox | None) -> qe.GeoBoundingBox | None:
    return None if g is None else qe.GeoBoundingBox(_geo_point(g.top_left), _geo_point(g.bottom_right))


def _geo_radius(g: qm.GeoRadius | None) -> qe.GeoRadius | None:
    return None if g is None else qe.GeoRadius(_geo_point(g.center), g.radius)


def _geo_polygon(g: qm.GeoPolygon | None) -> qe.GeoPolygon | None:
    if g is None:
        return None
    return qe.GeoPolygon(
        [_geo_point(p) for p in g.exterior.points],
        [[_geo_point(p) for p in ring.points] for ring in g.interiors] if g.interiors else None,
    )
