"""Typed Python clients of the search gateway: HTTP/JSON (the mobile app's contract) and gRPC.

    from prism.client import GatewayClient, GrpcGatewayClient

    with GatewayClient("http://127.0.0.1:8080", api_key="...") as gw:          # the app, the bot
        page = gw.search_text("blue dress", k=20, filters={"colour": ["Blue"]})
        same = gw.search_image(open("photo.jpg", "rb").read(), k=10)
    with GrpcGatewayClient("127.0.0.1:50050") as ads:                          # the ad system
        lists = ads.similar(["0111565001", "0111586001"], k=8, exclude_same_group=True)

Errors come back as the shared :class:`prism.errors.PrismError` subclasses with the server's code
and reason (InvalidInput for 4xx / INVALID_ARGUMENT, NotFound, Unavailable, DeadlineExceeded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
import httpx

from prism.errors import DeadlineExceeded, InvalidInput, NotFound, PrismError, Unavailable
from prism.gen.common.v1 import types_pb2
from prism.gen.search.v1 import search_pb2, search_pb2_grpc

Filters = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class Hit:
    id: str
    title: str
    score: float
    image_url: str = ""
    matched: str = ""


@dataclass(frozen=True)
class SearchPage:
    hits: list[Hit]
    next_cursor: str | None = None
    facets: dict[str, dict[str, int]] = field(default_factory=dict)
    took_ms: float = 0.0
    reranked: bool = False
    rerank_skipped: str = ""  # why an asked-for rerank did not happen

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.hits]


def _error(status: int, code: str, message: str) -> PrismError:
    if status == 404:
        return NotFound(message)
    if status == 503:
        return Unavailable(message)
    if status == 504:
        return DeadlineExceeded(message)
    if 400 <= status < 500:
        return InvalidInput(message, code=code or "invalid_request")
    return PrismError(message)


class GatewayClient:
    """The gateway's HTTP API; one connection pool, an optional API key, a timeout on every call."""

    def __init__(self, base_url: str, *, api_key: str = "", timeout_s: float = 30.0) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                err = response.json().get("error", {})
            except ValueError:
                err = {}
            raise _error(response.status_code, str(err.get("code", "")), str(err.get("message", response.text)))
        return response.json()

    @staticmethod
    def _page(data: Mapping[str, Any]) -> SearchPage:
        return SearchPage(
            hits=[
                Hit(h["id"], h.get("title", ""), float(h["score"]), h.get("image_url", ""), h.get("matched", ""))
                for h in data.get("hits", [])
            ],
            next_cursor=data.get("next_cursor"),
            facets={k: dict(v) for k, v in (data.get("facets") or {}).items()},
            took_ms=float(data.get("took_ms", 0.0)),
            reranked=bool(data.get("reranked", False)),
            rerank_skipped=str(data.get("rerank_skipped", "")),
        )

    def search_text(
        self,
        text: str,
        *,
        k: int = 20,
        filters: Filters | None = None,
        cursor: str | None = None,
        rerank: bool | None = None,
    ) -> SearchPage:
        """``rerank``: None leaves it to the server's default."""
        body: dict[str, Any] = {"text": text, "k": k}
        if rerank is not None:
            body["rerank"] = rerank
        if filters:
            body["filters"] = {key: list(v) for key, v in filters.items()}
        if cursor:
            body["cursor"] = cursor
        return self._page(self._json(self._http.post("/v1/search", json=body)))

    def search_image(self, image: bytes, *, k: int = 20, cursor: str | None = None) -> SearchPage:
        data = {"k": str(k), **({"cursor": cursor} if cursor else {})}
        return self._page(self._json(self._http.post("/v1/search", files={"image": ("query", image)}, data=data)))

    def product(self, product_id: str) -> dict[str, Any]:
        return dict(self._json(self._http.get(f"/v1/products/{product_id}")))

    def similar(self, product_id: str, *, k: int = 20, exclude_same_group: bool = False) -> SearchPage:
        params: dict[str, str | int] = {"k": k, "exclude_same_group": str(exclude_same_group).lower()}
        return self._page(self._json(self._http.get(f"/v1/products/{product_id}/similar", params=params)))


_GRPC_ERRORS: dict[grpc.StatusCode, type[PrismError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


class GrpcGatewayClient:
    """The gateway's gRPC SearchService (prism.search.v1), e.g. for the ad system's batched Similar."""

    def __init__(self, address: str, *, api_key: str = "", timeout_s: float = 30.0) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = search_pb2_grpc.SearchServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout = timeout_s
        self._metadata = [("x-api-key", api_key)] if api_key else []

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcGatewayClient:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            status, details = exc.code(), str(exc.details() or "")
            if status == grpc.StatusCode.INVALID_ARGUMENT:
                code, _, msg = details.partition(": ")
                raise InvalidInput(msg or details, code=code if msg else "invalid_argument") from exc
            raise _GRPC_ERRORS.get(status, PrismError)(details) from exc

    @staticmethod
    def _options(
        k: int, filters: Filters | None, cursor: str | None, rerank: bool | None = None
    ) -> search_pb2.SearchOptions:
        opts = search_pb2.SearchOptions(
            k=k,
            cursor=cursor or "",
            filters=types_pb2.Filters(
                any_of={key: types_pb2.StringList(values=list(v)) for key, v in (filters or {}).items()}
            ),
        )
        if rerank is not None:
            opts.rerank = rerank
        return opts

    @staticmethod
    def _page(r: search_pb2.SearchResponse) -> SearchPage:
        return SearchPage(
            hits=[Hit(h.id, h.title, float(h.score), h.image_url, h.matched) for h in r.hits],
            next_cursor=r.next_cursor or None,
            facets={k: dict(v.counts) for k, v in r.facets.items()},
            took_ms=float(r.took_ms),
            reranked=bool(r.reranked),
            rerank_skipped=r.rerank_skipped,
        )

    def search_text(
        self,
        text: str,
        *,
        k: int = 20,
        filters: Filters | None = None,
        cursor: str | None = None,
        rerank: bool | None = None,
    ) -> SearchPage:
        req = search_pb2.SearchTextRequest(text=text, options=self._options(k, filters, cursor, rerank))
        return self._page(self._call(self._stub.SearchText, req))

    def search_image(self, image: bytes, *, k: int = 20, filters: Filters | None = None) -> SearchPage:
        req = search_pb2.SearchImageRequest(image=types_pb2.Media(data=image), options=self._options(k, filters, None))
        return self._page(self._call(self._stub.SearchImage, req))

    def similar(
        self,
        product_ids: Sequence[str],
        *,
        k: int = 20,
        filters: Filters | None = None,
        exclude_same_group: bool = False,
    ) -> list[SearchPage]:
        """One page per id, in order, in one call (the ad system's batch)."""
        req = search_pb2.SimilarRequest(
            product_ids=list(product_ids),
            options=self._options(k, filters, None),
            exclude_same_group=exclude_same_group,
        )
        return [self._page(r) for r in self._call(self._stub.Similar, req).results]
