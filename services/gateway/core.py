"""The search core behind both the HTTP and the gRPC API.

It validates input before anything reaches an encoder, encodes the query, searches the index,
and shapes hits.  One point per product in the index means one hit per product.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import structlog
from qdrant_client import models as qm

from prism import tracing
from prism.catalog import parse_product, validate_product_id
from prism.encoding import Encoded, EncoderClient
from prism.errors import InvalidInput, NotFound, Unavailable
from prism.fusers import RetrievalWeights, attribute_boosts
from prism.glossary import load_glossary
from prism.index import AnyIndex, ScoredProduct, build_filter, narrowed
from prism.lexical import Bm25Encoder, QueryTranslator, detect_language
from prism.media.images import ImageLimits, probe_image
from prism.media.video import VideoLimits, probe_video
from prism.models.reranker import Reranker, passage
from prism.storage import ObjectStore
from prism.tagger import PREDICTED_FIELD
from prism.vectors import normalized_mean

from .ranking import Fused, weighted_rrf
from .retention import QueryMedia
from .settings import Settings

log = structlog.get_logger(__name__)

HIT_FIELDS = ["product_id", "title", "images", "attributes", "fusion_weights"]
# "similar products" also reads what the photo tagger predicted (its boosts may use it)
SIMILAR_FIELDS = [*HIT_FIELDS, PREDICTED_FIELD]


@dataclass(frozen=True)
class SearchOptions:
    k: int = 20
    filters: Mapping[str, Sequence[str]] = field(default_factory=dict)
    price_min: float | None = None
    price_max: float | None = None
    cursor: str | None = None
    facets: tuple[str, ...] = ()
    viewed: tuple[str, ...] = ()  # personal context: products the shopper viewed recently
    rerank: bool | None = None  # None: the server's default


@dataclass(frozen=True)
class Hit:
    id: str
    title: str
    score: float
    image_url: str
    matched: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "score": round(self.score, 6),
            "image_url": self.image_url,
            "matched": self.matched,
        }


@dataclass
class SearchResult:
    hits: list[Hit]
    next_cursor: str | None
    took_ms: float
    reranked: bool = False
    facets: dict[str, dict[str, int]] = field(default_factory=dict)
    rerank_skipped: str = ""  # why an asked-for rerank did not happen ("latency_budget", "no_model")

    def to_json(self) -> dict[str, Any]:
        out = {
            "hits": [h.to_json() for h in self.hits],
            "facets": self.facets,
            "next_cursor": self.next_cursor,
            "took_ms": round(self.took_ms, 2),
            "reranked": self.reranked,
        }
        if self.rerank_skipped:
            out["rerank_skipped"] = self.rerank_skipped
        return out


@dataclass
class RerankNote:
    """What reranking did for one search (filled in while the ranking is retrieved)."""

    reranked: bool = False
    skipped: str = ""


def rerank_passage(payload: Mapping[str, Any]) -> str:
    return passage(str(payload.get("title") or ""), payload.get("attributes") or {})


def count_facets(found: Sequence[ScoredProduct], keys: Sequence[str]) -> dict[str, dict[str, int]]:
    """Value counts of the given attributes among ``found``, most frequent first."""
    return count_payload_facets([s.payload for s in found], keys)


def count_payload_facets(payloads: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for key in keys:
        counts: dict[str, int] = {}
        for payload in payloads:
            value = (payload.get("attributes") or {}).get(key)
            if value is not None:
                counts[str(value)] = counts.get(str(value), 0) + 1
        out[key] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def _boost_value(payload: Mapping[str, Any], field_key: tuple[str, str]) -> str:
    """A product's value of a boosted (payload field, key), "" when it has none."""
    obj = payload.get(field_key[0])
    return str(obj.get(field_key[1]) or "") if isinstance(obj, Mapping) else ""


def image_url(product_id: str, payload: Mapping[str, Any]) -> str:
    return f"/v1/products/{product_id}/images/0" if payload.get("images") else ""


class SearchCore:
    def __init__(
        self,
        settings: Settings,
        index: AnyIndex,
        text: EncoderClient,
        image: EncoderClient,
        video: EncoderClient | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.text = text
        self.image = image
        self.video = video
        self.video_limits = VideoLimits(max_bytes=settings.max_video_bytes)
        self.image_limits = ImageLimits(max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
        # Query photos/videos: logged as size, type and hash only; kept only if a setting asks.
        self.query_media = QueryMedia.from_settings(settings)
        self.lexical: Bm25Encoder | None = None
        self.translator: QueryTranslator | None = None
        # the shop's Chinese term list, read once (a bad file stops the start with its line number)
        self.glossary = load_glossary(settings.glossary_file)
        # The list weights ``prism train`` chose on validation for an index with a ``shared`` vector.
        self.retrieval: RetrievalWeights | None = None
        # Where products ingested through the S3 path keep their photos (PRISM_STORE_*, when set).
        self.store: ObjectStore | None = None
        # The trained cross-encoder for text queries (loaded at warm-up from the models folder).
        self.reranker: Reranker | None = None
        self._stats_checked = time.monotonic()
        self._stats_mtime = self._lexical_mtime()
        self._reload_lock = threading.Lock()

    def _lexical_mtime(self) -> float:
        path = self.settings.lexical_stats
        try:
            return path.stat().st_mtime if path is not None else 0.0
        except OSError:
            return 0.0

    def maybe_reload_lexical(self) -> None:
        """Follow the BM25 statistics the fusion service keeps writing (distributed mode): reload the
        file when it changed, checked at most every ``lexical_reload_s``."""
        every = self.settings.lexical_reload_s
        if every <= 0 or self.settings.lexical_stats is None or time.monotonic() - self._stats_checked < every:
            return
        if not self._reload_lock.acquire(blocking=False):
            return  # another request is already reloading
        try:
            self._stats_checked = time.monotonic()
            mtime = self._lexical_mtime()
            if mtime and mtime != self._stats_mtime:
                self.set_lexical(Bm25Encoder.load(self.settings.lexical_stats))
                self._stats_mtime = mtime
                log.info("gateway.lexical_reloaded", n_docs=self.lexical.n_docs if self.lexical else 0)
        except (OSError, ValueError) as exc:  # a half-written or foreign file: keep the current stats
            log.warning("gateway.lexical_reload_failed", error=str(exc))
        finally:
            self._reload_lock.release()

    # -- validation ---------------------------------------------------------------------------
    def options(
        self,
        k: object = None,
        filters: object = None,
        cursor: object = None,
        price_min: object = None,
        price_max: object = None,
        facets: object = None,
        viewed: object = None,
        rerank: object = None,
    ) -> SearchOptions:
        """Validate the common search fields; ``facets=None`` means the configured default facets."""
        if k is None or k == "":
            kk = self.settings.default_k
        else:
            try:
                kk = int(str(k))
            except ValueError as exc:
                raise InvalidInput(f"k must be an integer, got {str(k)[:40]!r}", code="invalid_k") from exc
        if not 1 <= kk <= self.settings.max_k:
            raise InvalidInput(f"k must be between 1 and {self.settings.max_k}", code="invalid_k")
        flt: dict[str, list[str]] = {}
        if filters:
            if not isinstance(filters, Mapping):
                raise InvalidInput("filters must be an object of attribute -> value(s)", code="invalid_filter")
            for key, val in filters.items():
                vals = val if isinstance(val, list) else [val]
                if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in vals):
                    raise InvalidInput(f"filter {key!r} values must be strings or numbers", code="invalid_filter")
                flt[str(key)] = [str(v) for v in vals]
        prices: list[float | None] = []
        for name, p in (("price_min", price_min), ("price_max", price_max)):
            if p is None or p == "":
                prices.append(None)
                continue
            try:
                prices.append(float(str(p)))
            except ValueError as exc:
                raise InvalidInput(f"{name} must be a number", code="invalid_filter") from exc
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidInput("cursor must be a string", code="invalid_cursor")
        if facets is None:
            facet_keys = tuple(self.settings.facet_attributes)
        elif isinstance(facets, list) and len(facets) <= 10 and all(isinstance(f, str) for f in facets):
            facet_keys = tuple(facets)
        else:
            raise InvalidInput("facets must be a list of at most 10 attribute names", code="invalid_facets")
        context: tuple[str, ...] = ()
        if viewed is not None:
            if not isinstance(viewed, list) or len(viewed) > self.settings.max_context_ids:
                raise InvalidInput(
                    f"viewed must be a list of at most {self.settings.max_context_ids} product ids",
                    code="invalid_context",
                )
            try:
                context = tuple(dict.fromkeys(validate_product_id(v) for v in viewed))
            except InvalidInput as exc:
                raise InvalidInput(f"viewed: {exc.message}", code="invalid_context") from exc
        if rerank is not None and rerank != "" and not isinstance(rerank, bool):
            if str(rerank).lower() not in ("true", "false", "1", "0"):
                raise InvalidInput("rerank must be true or false", code="invalid_rerank")
            rerank = str(rerank).lower() in ("true", "1")
        return SearchOptions(
            k=kk,
            filters=flt,
            price_min=prices[0],
            price_max=prices[1],
            cursor=cursor or None,
            facets=facet_keys,
            viewed=context,
            rerank=rerank if isinstance(rerank, bool) else None,
        )

    def validate_text(self, text: object) -> str:
        if not isinstance(text, str):
            raise InvalidInput("text must be a string", code="invalid_query")
        q = " ".join(text.split())
        if not q:
            raise InvalidInput("the query text is empty", code="empty_query")
        if len(q) > self.settings.max_query_chars:
            raise InvalidInput(
                f"query of {len(q)} characters exceeds the limit of {self.settings.max_query_chars}",
                code="query_too_long",
            )
        return q

    # -- cursor: offset bound to the query it was issued for -----------------------------------
    @staticmethod
    def _fingerprint(parts: Sequence[object]) -> str:
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]

    def _offset(self, cursor: str | None, fp: str) -> int:
        if not cursor:
            return 0
        try:
            raw = base64.urlsafe_b64decode(cursor.encode() + b"==").decode()
            off, got = raw.split(":", 1)
            offset = int(off)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput("malformed cursor", code="invalid_cursor") from exc
        if got != fp or not 0 <= offset <= 10_000:
            raise InvalidInput("cursor does not belong to this query", code="invalid_cursor")
        return offset

    @staticmethod
    def _cursor(offset: int, fp: str) -> str:
        return base64.urlsafe_b64encode(f"{offset}:{fp}".encode()).decode().rstrip("=")

    # -- searches -----------------------------------------------------------------------------
    def _run(
        self,
        retrieve: Callable[[int, qm.Filter | None], list[Fused]],
        opts: SearchOptions,
        fp_parts: Sequence[object],
        *,
        exclude: Sequence[str] = (),
        must_not: Mapping[str, str] | None = None,
        start: float | None = None,
    ) -> SearchResult:
        """Page through ``retrieve(limit, filter)`` (best first) with a cursor bound to the query."""
        t0 = start if start is not None else time.perf_counter()
        fp = self._fingerprint(
            [*fp_parts, sorted(opts.filters.items()), opts.price_min, opts.price_max, opts.k, opts.viewed]
        )
        if opts.viewed:
            # recommend-style: the viewed products bias the ranking and are not offered again
            retrieve = self._with_context(retrieve, opts)
            exclude = [*exclude, *opts.viewed]
        offset = self._offset(opts.cursor, fp)
        flt = build_filter(
            opts.filters,
            price_min=opts.price_min,
            price_max=opts.price_max,
            exclude_ids=exclude,
            must_not_match=must_not,
        )
        want_facets = offset == 0 and bool(opts.facets)
        # Facets count attribute values over the head of the ranking (the candidates a shopper can
        # actually reach), fetched in the same query: counting the whole collection per request is
        # an O(N) scan in embedded mode (~0.3 s per attribute at 10k products).
        limit = offset + opts.k + 1
        found = retrieve(max(limit, self.settings.facet_pool) if want_facets else limit, flt)
        page = found[offset : offset + opts.k]
        hits = [self._hit(f.product, f.matched) for f in page]
        facets = count_facets([f.product for f in found], opts.facets) if want_facets else {}
        return SearchResult(
            hits=hits,
            next_cursor=self._cursor(offset + opts.k, fp) if len(found) > offset + opts.k else None,
            took_ms=(time.perf_counter() - t0) * 1000,
            facets=facets,
        )

    def _blend(
        self,
        retrieve: Callable[[int, qm.Filter | None], list[Fused]],
        using: str,
        vector: np.ndarray,
        weight: float,
        opts: SearchOptions,
        exclude: Sequence[str] = (),
        pin: int = 0,
    ) -> Callable[[int, qm.Filter | None], list[Fused]]:
        """The query's ranking fused with one more list (``vector`` searched on ``using``), weighted
        ``weight`` against the query's 1.0 in reciprocal-rank fusion: it reorders what the query
        finds rather than replacing it; its first ``pin`` hits stay where they are.  Hits keep the
        query's "matched"."""

        def fused(limit: int, flt: qm.Filter | None) -> list[Fused]:
            pool = max(limit, self.settings.hybrid_pool)
            base = retrieve(pool, flt)
            # the query's filters hold for the extra list too
            extra_filter = build_filter(
                opts.filters, price_min=opts.price_min, price_max=opts.price_max, exclude_ids=[*exclude, *opts.viewed]
            )
            extra = self.index.search(using, vector, limit=pool, query_filter=extra_filter, with_payload=HIT_FIELDS)
            matched = {f.product.product_id: f.matched for f in base}
            pinned = base[:pin]
            keep = {f.product.product_id for f in pinned}
            lists = {"query": [f.product for f in base[pin:]], using: [s for s in extra if s.product_id not in keep]}
            ranked = weighted_rrf(lists, {"query": 1.0, using: weight}, self.settings.rrf_k)
            rest = [Fused(f.product, matched.get(f.product.product_id, f.matched)) for f in ranked]
            return [*pinned, *rest][:limit]

        return fused

    def wants_rerank(self, opts: SearchOptions, language: str) -> bool:
        """A request's own ``rerank`` wins; else ``on``/``off``; else (``auto``) the model's verdict:
        on when it beat the first stage on validation, for the query languages it was validated on
        (a Chinese query reaches it only through the dictionary translation, which it never saw)."""
        if opts.rerank is not None:
            return opts.rerank
        mode = self.settings.rerank
        if mode != "auto":
            return mode == "on"
        reranker = self.reranker
        return reranker is not None and reranker.enabled_by_default and reranker.serves_language(language)

    def _with_rerank(
        self, retrieve: Callable[[int, qm.Filter | None], list[Fused]], query: str, note: RerankNote, t0: float
    ) -> Callable[[int, qm.Filter | None], list[Fused]]:
        """The head of the ranking reordered by the cross-encoder, reading the query with each
        product's attributes, title and photo (its shared-space vector).  Skipped when the search
        would overrun ``rerank_budget_ms``; hits keep the first stage's scores, in the new order,
        so scores stay comparable down the page."""
        reranker = self.reranker
        if reranker is None:
            note.skipped = "no_model"
            return retrieve
        head_n = self.settings.rerank_head

        def reranked(limit: int, flt: qm.Filter | None) -> list[Fused]:
            found = retrieve(max(limit, head_n), flt)
            head = found[:head_n]
            if len(head) < 2:
                return found[:limit]
            elapsed_ms = (time.perf_counter() - t0) * 1000
            if elapsed_ms + reranker.estimate_ms(len(head)) > self.settings.rerank_budget_ms:
                note.skipped = "latency_budget"
                return found[:limit]
            ids = [f.product.product_id for f in head]
            dim = reranker.config.image_dim
            images = np.zeros((len(head), max(dim, 1)), dtype=np.float32)
            has = np.zeros(len(head), dtype=bool)
            if dim and "image_shared" in self.index.dense_names():
                stored = self.index.vectors(ids, ["image_shared"])
                for i, pid in enumerate(ids):
                    vec = stored.get(pid, {}).get("image_shared")
                    if vec is not None and vec.shape[-1] == dim:
                        images[i], has[i] = vec.reshape(-1)[:dim], True
            with tracing.span("rerank", pairs=len(head)):
                scores = reranker.score(query, [rerank_passage(f.product.payload) for f in head], images, has)
            order = np.argsort(-scores, kind="stable")
            kept_scores = [f.product.score for f in head]
            new_head = [
                Fused(replace(head[int(i)].product, score=kept_scores[rank]), head[int(i)].matched)
                for rank, i in enumerate(order)
            ]
            note.reranked = True
            return [*new_head, *found[head_n:]][:limit]

        return reranked

    def _with_context(
        self, retrieve: Callable[[int, qm.Filter | None], list[Fused]], opts: SearchOptions
    ) -> Callable[[int, qm.Filter | None], list[Fused]]:
        """Personal context: "products like the ones the shopper viewed" -- the mean of their
        vectors (Qdrant's recommend with positive examples, average strategy) -- blended into the
        query's ranking with ``context_weight``."""
        names = self.index.dense_names()
        using = next((n for n in ("shared", "image", "text") if n in names), None)
        known = self.index.vectors(list(opts.viewed), [using]) if using else {}
        rows = [v[using] for v in known.values() if using in v]
        if not rows or using is None:
            return retrieve  # none of the viewed products is (still) indexed
        return self._blend(retrieve, using, normalized_mean(np.stack(rows)), self.settings.context_weight, opts)

    def _with_kind(
        self, retrieve: Callable[[int, qm.Filter | None], list[Fused]], shared: np.ndarray | None, opts: SearchOptions
    ) -> Callable[[int, qm.Filter | None], list[Fused]]:
        """A photo or clip query with trained heads: its shared-space vector (what kind of product,
        which colour) against the products' projected photos, blended under the near-duplicate
        match so the rest of the page shows the same kind of product."""
        weight = self.settings.visual_kind_weight
        if shared is None or weight <= 0 or "image_shared" not in self.index.dense_names():
            return retrieve
        # the near-duplicate match (the very product in the photo) keeps the first place
        return self._blend(retrieve, "image_shared", shared, weight, opts, pin=1)

    def _single(
        self, using: str, query: np.ndarray, matched: str | None = None
    ) -> Callable[[int, qm.Filter | None], list[Fused]]:
        def retrieve(limit: int, flt: qm.Filter | None) -> list[Fused]:
            found = self.index.search(
                using,
                query,
                limit=limit,
                query_filter=flt,
                with_payload=HIT_FIELDS,
                candidates=self.settings.rescore_candidates,
            )
            return [Fused(s, matched or using) for s in found]

        return retrieve

    @staticmethod
    def _hit(s: ScoredProduct, matched: str) -> Hit:
        if matched == "shared":
            # the fused vector matched: say which modality weighed most in it for this product
            weights = s.payload.get("fusion_weights") or {}
            matched = max(weights, key=lambda m: weights[m]) if weights else "text"
        elif matched == "lexical":
            matched = "text"
        return Hit(
            id=s.product_id,
            title=str(s.payload.get("title", "")),
            score=s.score,
            image_url=image_url(s.product_id, s.payload),
            matched=matched,
        )

    def similar_weights(self) -> dict[str, float]:
        """Weights of the vectors "similar products" sums: those ``prism train`` chose on validation
        for an index with the ``shared`` vector, else the image/text setting."""
        if self.retrieval is not None and self.retrieval.similar and "shared" in self.index.dense_names():
            return dict(self.retrieval.similar)
        w = self.settings.similar_image_weight
        return {"image": w, "text": 1.0 - w}

    def text_lists(self) -> tuple[dict[str, float], int]:
        """The ranked lists a text query fuses, with their weights, and the RRF constant.

        An index with trained heads has the ``shared`` vector (text and photo fused), searched with
        the weights chosen on validation; otherwise dense ``text`` and BM25 with the settings'."""
        names = self.index.dense_names()
        if "shared" in names and self.retrieval is not None:
            weights = {n: w for n, w in self.retrieval.weights.items() if n in names or n == "lexical"}
            return weights, self.retrieval.rrf_k
        if "shared" in names:
            return {"shared": self.settings.dense_weight, "lexical": self.settings.lexical_weight}, self.settings.rrf_k
        return {"text": self.settings.dense_weight, "lexical": self.settings.lexical_weight}, self.settings.rrf_k

    def set_lexical(self, lexical: Bm25Encoder) -> None:
        """Use these BM25 statistics (those the index was built with) for the lexical half of search."""
        translator = QueryTranslator(vocabulary=lexical.vocabulary, glossary=self.glossary)
        translator.warm()
        self.lexical, self.translator = lexical, translator

    def search_text(self, text: object, opts: SearchOptions) -> SearchResult:
        with tracing.span("search", kind="text"):
            return self._search_text(text, opts)

    def search_image(self, data: bytes, opts: SearchOptions) -> SearchResult:
        with tracing.span("search", kind="image", bytes=len(data)):
            return self._search_image(data, opts)

    def search_video(self, data: bytes, opts: SearchOptions) -> SearchResult:
        with tracing.span("search", kind="video", bytes=len(data)):
            return self._search_video(data, opts)

    def similar(self, product_id: str, opts: SearchOptions, exclude_same_group: bool = False) -> SearchResult:
        with tracing.span("search", kind="similar"):
            return self._similar(product_id, opts, exclude_same_group)

    def _search_text(self, text: object, opts: SearchOptions) -> SearchResult:
        """Hybrid: dense text vectors and BM25 over the product text, fused by weighted RRF.

        A Chinese (or mixed) query is translated to English with CC-CEDICT for the lexical half
        and for the dense half too: the 4-bit e5 aligns short Chinese queries with English product
        text poorly (MODELS.md), while the translation lands in the catalog's own words.
        """
        t0 = time.perf_counter()
        q = self.validate_text(text)
        self.maybe_reload_lexical()
        translation = self.translator.translate(q) if self.translator is not None else None
        dense_text = translation.text if translation is not None and translation.text else q
        vec = self.text.embed_texts([dense_text], kind="query", timeout=self.settings.encoder_timeout_s)[0]
        lexical = self.lexical
        weights, rrf_k = self.text_lists()
        if lexical is None or translation is None:
            weights.pop("lexical", None)
        weights = {n: w for n, w in weights.items() if w > 0}
        if not weights:
            raise Unavailable("no retrieval list is configured for text queries")
        note = RerankNote()
        # the translator has already told the query's language; without one, detect it here
        rerank = self.wants_rerank(opts, translation.language if translation is not None else detect_language(q))
        if len(weights) == 1 and "lexical" not in weights:
            single = self._single(next(iter(weights)), vec)
            if rerank:
                single = self._with_rerank(single, dense_text, note, t0)
            return self._noted(self._run(single, opts, ["text", q, rerank], start=t0), note)
        sparse = lexical.encode_query(translation.weighted_terms()) if lexical and translation else None

        def first_stage(limit: int, flt: qm.Filter | None) -> list[Fused]:
            pool = max(limit, self.settings.hybrid_pool)
            lists = {
                name: self.index.search(
                    name,
                    sparse if name == "lexical" and sparse is not None else vec,
                    limit=pool,
                    query_filter=flt,
                    with_payload=HIT_FIELDS,
                )
                for name in weights
            }
            return weighted_rrf(lists, weights, rrf_k)[:limit]

        retrieve = self._with_rerank(first_stage, dense_text, note, t0) if rerank else first_stage
        return self._noted(self._run(retrieve, opts, ["text", q, rerank], start=t0), note)

    @staticmethod
    def _noted(result: SearchResult, note: RerankNote) -> SearchResult:
        result.reranked, result.rerank_skipped = note.reranked, note.skipped
        return result

    def _search_image(self, data: bytes, opts: SearchOptions) -> SearchResult:
        t0 = time.perf_counter()
        digest = self.query_media.record("image", data)  # before the probe: refused uploads are logged too
        probe_image(data, self.image_limits)  # refuse bad uploads before they reach the encoder
        enc = self._embed_one(self.image, data)
        retrieve = self._with_kind(self._single("image", enc.native), enc.shared, opts)
        return self._run(retrieve, opts, ["image", digest], start=t0)

    def _embed_one(self, client: EncoderClient, data: bytes) -> Encoded:
        # a shopper's photo or clip: not cached by the encoder, never logged (only size and hash)
        [res] = client.embed_media_encoded([data], timeout=self.settings.encoder_timeout_s, ephemeral=True)
        if isinstance(res, InvalidInput):
            raise res
        return res

    def _search_video(self, data: bytes, opts: SearchOptions) -> SearchResult:
        """A clip is pooled into the image encoder's views, so it is matched against product photos
        (and product videos through their pooled vectors) exactly like a photo query."""
        t0 = time.perf_counter()
        if self.video is None:
            raise InvalidInput("video search is not available in this deployment", code="unsupported_modality")
        digest = self.query_media.record("video", data)
        probe_video(data, self.video_limits)  # refuse bad uploads before they reach the encoder
        enc = self._embed_one(self.video, data)
        vec = enc.native
        fp = ["video", digest]
        if "video" not in self.index.dense_names():
            return self._run(self._with_kind(self._single("image", vec), enc.shared, opts), opts, fp, start=t0)
        pooled = normalized_mean(vec.reshape(-1, vec.shape[-1]))
        photos, videos = self._single("image", vec), self._single("video", pooled)

        def retrieve(limit: int, flt: qm.Filter | None) -> list[Fused]:
            # Product photos and product videos both answer a clip, in the same image-network
            # space: a product scores its best match of the two (rank fusion would favour products
            # that have both over a product known only by its video).
            best: dict[str, Fused] = {}
            for found in (photos(limit, flt), videos(limit, flt)):
                for f in found:
                    if f.product.product_id not in best or f.product.score > best[f.product.product_id].product.score:
                        best[f.product.product_id] = f
            return sorted(best.values(), key=lambda f: (-f.product.score, f.product.product_id))[:limit]

        return self._run(self._with_kind(retrieve, enc.shared, opts), opts, fp, start=t0)

    def _similar(self, product_id: str, opts: SearchOptions, exclude_same_group: bool = False) -> SearchResult:
        """Products like ``product_id``: image and text similarity combined, queried by id (no vector round trip)."""
        t0 = time.perf_counter()
        pid = validate_product_id(product_id)
        payload = self.index.get(pid)
        must_not: dict[str, str] = {}
        group = (payload.get("attributes") or {}).get(self.settings.group_attribute)
        if exclude_same_group and group:
            must_not[self.settings.group_attribute] = str(group)
        fp = self._fingerprint(["similar", pid, exclude_same_group, sorted(opts.filters.items()), opts.k])
        offset = self._offset(opts.cursor, fp)
        flt = build_filter(
            opts.filters, price_min=opts.price_min, price_max=opts.price_max, exclude_ids=[pid], must_not_match=must_not
        )
        pool = max(3 * (offset + opts.k + 1), 50)
        # Query by id on the dense vectors: "more like this" is about the kind of product, which
        # the mean image vector (and the trained shared vector: colour and type) carries; MaxSim
        # rescoring is for finding the very product in a photo.
        has = set(payload.get("vectors") or ())
        wanted = self.similar_weights()
        lexical = self.lexical
        mlt: dict[str, float] = {}
        if wanted.get("more_like_this", 0) > 0 and lexical is not None and "lexical" in has:
            # only when weighted: building the query parses the product and scores its terms
            mlt = lexical.more_like_this(parse_product(payload))
        if mlt:
            has.add("more_like_this")
        weights = {n: w for n, w in wanted.items() if n in has and w > 0}
        if not weights:  # the product lacks every weighted vector: use whichever dense one it has
            weights = {n: 1.0 for n in ("shared", "image", "text") if n in has}
        # attribute boosts chosen on validation (e.g. the same type and colour), for the values
        # this product has: declared attributes, or those its photo shows (prism.tagger).  The
        # heaviest vector is also searched among the products sharing all the declared values, or
        # a boost could only reorder whatever the vectors happened to bring (one search more, not
        # one per vector: filtered searches are the costly ones).  Predicted values, right about
        # three times in four, only reorder the candidates: narrowing by them cost more than it gave.
        every = attribute_boosts(wanted)
        own = {fk: v for fk in every if (v := _boost_value(payload, fk))}
        boosts = {fk: every[fk] for fk in own}
        declared = {key: own[(obj, key)] for obj, key in boosts if obj == "attributes"}
        dense = [n for n in weights if n != "more_like_this"]
        primary = max(dense, key=lambda n: weights[n]) if declared and dense else None
        lists: dict[str, list[ScoredProduct]] = {}
        for using in weights:
            scopes = [flt] if using != primary else [flt, narrowed(flt, declared)]
            for scope in scopes:
                lists.setdefault(using, []).extend(
                    self.index.search(
                        "lexical" if using == "more_like_this" else using,
                        lexical.encode_terms(mlt) if using == "more_like_this" and lexical is not None else pid,
                        limit=pool,
                        query_filter=scope,
                        with_payload=SIMILAR_FIELDS,
                    )
                )
        by_list = {using: {s.product_id: s.score for s in found} for using, found in lists.items()}
        if "more_like_this" in by_list:
            # BM25 scores have no fixed scale: relative to the best match, like the cosines' [0, 1]
            top_score = max(by_list["more_like_this"].values(), default=0.0) or 1.0
            by_list["more_like_this"] = {c: v / top_score for c, v in by_list["more_like_this"].items()}
        payloads = {s.product_id: s.payload for found in lists.values() for s in found}
        scores: dict[str, float] = {}
        for using, weight in weights.items():
            got = by_list.get(using, {})
            floor = min(got.values(), default=0.0)  # a candidate missing from a list scores at most its tail
            for cand in payloads:
                scores[cand] = scores.get(cand, 0.0) + weight * got.get(cand, floor)
        for fk, weight in boosts.items():
            for cand in payloads:
                if _boost_value(payloads[cand], fk) == own[fk]:
                    scores[cand] += weight
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        page = ranked[offset : offset + opts.k]
        more = len(ranked) > offset + opts.k
        top = max(weights, key=lambda n: weights[n]) if weights else "image"
        matched = "text" if top in ("text", "more_like_this") else "image"
        hits = [
            Hit(
                id=c,
                title=str(payloads[c].get("title", "")),
                score=s,
                image_url=image_url(c, payloads[c]),
                matched=matched,
            )
            for c, s in page
        ]
        # Facets over the candidates already fetched (the head a shopper can reach), as for a
        # search; not a larger pool: that would move the floor scores above and so the ranking.
        facets = (
            count_payload_facets([payloads[c] for c, _ in ranked[: self.settings.facet_pool]], opts.facets)
            if offset == 0 and opts.facets
            else {}
        )
        return SearchResult(
            hits=hits,
            next_cursor=self._cursor(offset + opts.k, fp) if more else None,
            took_ms=(time.perf_counter() - t0) * 1000,
            facets=facets,
        )

    def product(self, product_id: str) -> dict[str, Any]:
        pid = validate_product_id(product_id)
        p = self.index.get(pid)
        n = len(p.get("images") or [])
        return {
            "id": pid,
            "title": p.get("title", ""),
            "description": p.get("description", ""),
            "attributes": p.get("attributes") or {},
            "image_urls": [f"/v1/products/{pid}/images/{i}" for i in range(n)],
            "price": p.get("price"),
            "currency": p.get("currency"),
        }

    def image_file(self, product_id: str, n: int) -> Any:
        """A product's n-th image, only ever one that the index itself references: a file path
        (catalog folder or folder store), or the bytes from the S3 store for products ingested there."""
        from pathlib import Path

        pid = validate_product_id(product_id)
        p = self.index.get(pid)
        images = p.get("images") or []
        if not 0 <= n < len(images):
            raise NotFound(f"product {pid!r} has no image {n}")
        if p.get("media_store") == "s3":
            if self.store is None:
                raise NotFound(f"image {n} of {pid!r} lives in the object store, which this gateway does not read")
            return self.store.get(str(images[n]), self.settings.max_upload_bytes)
        root = p.get("catalog_root")
        if not root:
            raise NotFound(f"product {pid!r} has no image {n}")
        base = Path(root).resolve()
        path = (base / images[n]).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            raise NotFound(f"image {n} of {pid!r} is not available")
        return path
