"""gRPC SearchService: the same core as the HTTP API, for the ad system and the service bot."""

from __future__ import annotations

from typing import Any

import grpc

from prism.errors import InvalidInput
from prism.gen.common.v1 import types_pb2
from prism.gen.search.v1 import search_pb2, search_pb2_grpc

from .core import SearchCore, SearchOptions, SearchResult


def _options(core: SearchCore, o: search_pb2.SearchOptions) -> SearchOptions:
    f: types_pb2.Filters = o.filters
    filters: dict[str, Any] = {k: list(v.values) for k, v in f.any_of.items()}
    return core.options(
        o.k or None,
        filters,
        o.cursor or None,
        f.price_min if f.HasField("price_min") else None,
        f.price_max if f.HasField("price_max") else None,
        list(o.facets),  # gRPC callers (ad system, bots) name the facets they want; none by default
        list(o.viewed) or None,
        o.rerank if o.HasField("rerank") else None,
    )


def _response(r: SearchResult) -> search_pb2.SearchResponse:
    out = search_pb2.SearchResponse(
        next_cursor=r.next_cursor or "", took_ms=r.took_ms, reranked=r.reranked, rerank_skipped=r.rerank_skipped
    )
    for h in r.hits:
        out.hits.append(search_pb2.Hit(id=h.id, title=h.title, score=h.score, image_url=h.image_url, matched=h.matched))
    for name, counts in r.facets.items():
        out.facets[name].counts.update(counts)
    return out


def _media_bytes(m: types_pb2.Media, what: str) -> bytes:
    if m.WhichOneof("source") != "data":
        raise InvalidInput(f"{what} must be sent as bytes", code="invalid_media")
    return bytes(m.data)


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, core: SearchCore) -> None:
        self.core = core

    def SearchText(
        self, request: search_pb2.SearchTextRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchResponse:  # noqa: N802
        return _response(self.core.search_text(request.text, _options(self.core, request.options)))

    def SearchImage(
        self, request: search_pb2.SearchImageRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchResponse:  # noqa: N802
        return _response(
            self.core.search_image(_media_bytes(request.image, "image"), _options(self.core, request.options))
        )

    def SearchVideo(
        self, request: search_pb2.SearchVideoRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchResponse:  # noqa: N802
        return _response(
            self.core.search_video(_media_bytes(request.video, "video"), _options(self.core, request.options))
        )

    def Similar(self, request: search_pb2.SimilarRequest, context: grpc.ServicerContext) -> search_pb2.SimilarResponse:  # noqa: N802
        if not request.product_ids:
            raise InvalidInput("give at least one product id", code="invalid_request")
        if len(request.product_ids) > 100:
            raise InvalidInput("at most 100 product ids per call", code="invalid_request")
        opts = _options(self.core, request.options)
        return search_pb2.SimilarResponse(
            results=[_response(self.core.similar(pid, opts, request.exclude_same_group)) for pid in request.product_ids]
        )

    def GetProduct(self, request: search_pb2.GetProductRequest, context: grpc.ServicerContext) -> search_pb2.Product:  # noqa: N802
        p = self.core.product(request.id)
        out = search_pb2.Product(
            id=p["id"],
            title=p["title"],
            description=p["description"],
            attributes={k: str(v) for k, v in p["attributes"].items()},
            image_urls=p["image_urls"],
            currency=p.get("currency") or "",
        )
        if p.get("price") is not None:
            out.price = float(p["price"])
        return out
