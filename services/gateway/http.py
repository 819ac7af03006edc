"""HTTP/JSON API of the gateway (the mobile app's contract in DESIGN.md) and the web page."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from prism import metrics
from prism.errors import InvalidInput, PayloadTooLarge, PrismError
from prism.events import MAX_EVENT_BYTES, parse_event
from prism.logs import REQUEST_ID_HEADER, bind_request_id, clear_request_context
from prism.media.images import sniff_image_type

from .access import Access, RateLimiter, load_keys
from .core import SearchCore

log = structlog.get_logger(__name__)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _b64(value: object, what: str, limit: int) -> bytes:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a base64 string", code="invalid_base64")
    if len(value) > limit * 4 // 3 + 8:
        raise PayloadTooLarge(f"{what} decodes to more than {limit} bytes")
    try:
        return base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{what} is not valid base64", code="invalid_base64") from exc


def _json_filters(value: str) -> Any:
    """Filters sent as a form or query value: a JSON object (checked further by ``SearchCore.options``)."""
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidInput("filters must be a JSON object", code="invalid_filter") from exc


OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"})


def scope_of(path: str) -> str | None:
    """The scope a path needs (None: open to all, like the health and metrics endpoints)."""
    if path in OPEN_PATHS or not path.startswith("/v1/"):
        return None
    return "ingest" if path.startswith("/v1/events/") else "search"


def access_from(settings: Any) -> Access:
    keys = load_keys(settings.api_keys, settings.api_keys_file)
    return Access(keys, RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst))


def create_app(core: SearchCore, *, ready: Callable[[], bool] = lambda: True, access: Access | None = None) -> FastAPI:
    settings = core.settings
    app = FastAPI(title="Prism search gateway", version="1", docs_url="/docs", redoc_url=None)
    guard_access = access if access is not None else access_from(settings)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """API key -> scope -> rate limit, before anything is parsed or encoded."""
        scope = scope_of(request.url.path)
        if scope is None or request.method == "OPTIONS":
            return await call_next(request)
        key = None
        if not guard_access.open:
            presented = (
                request.headers.get("x-api-key")
                or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            )
            key = guard_access.identify(presented)
            if key is None:
                return error_response(401, "unauthorized", "a valid API key is required (X-API-Key)")
            if not key.allows(scope):
                return error_response(403, "forbidden", f"this API key lacks the {scope!r} scope")
        elif not settings.rate_limit_anonymous:
            return await call_next(request)
        wait = guard_access.retry_after(key, request.client.host if request.client else "unknown")
        if wait:
            response = error_response(429, "rate_limited", f"too many requests; retry in {wait} s")
            response.headers["Retry-After"] = str(wait)
            return response
        return await call_next(request)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key", "Authorization", REQUEST_ID_HEADER],
            max_age=600,
        )

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = bind_request_id(request.headers.get(REQUEST_ID_HEADER))
        start = time.perf_counter()
        route = request.url.path if not request.url.path.startswith("/v1/products/") else "/v1/products/{id}"
        try:
            response = await call_next(request)
        finally:
            clear_request_context()
        response.headers[REQUEST_ID_HEADER] = rid
        metrics.HTTP_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        metrics.HTTP_LATENCY.labels(route, request.method).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(PrismError)
    async def prism_error(_: Request, exc: PrismError) -> JSONResponse:
        if exc.http_status >= 500:
            log.warning("http.unavailable", code=exc.code, reason=exc.message)
        return error_response(exc.http_status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, "invalid_request", f"{loc}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("services.gateway").joinpath("web/index.html").read_text(encoding="utf-8"))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ok = ready()
        return JSONResponse({"status": "ready" if ok else "not_ready"}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/search")
    async def search(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        fields: dict[str, Any]
        if ctype == "multipart/form-data":
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > settings.max_upload_bytes + 65536:
                raise PayloadTooLarge(f"upload of {declared} bytes exceeds {settings.max_upload_bytes}")
            async with request.form(max_files=2, max_fields=20, max_part_size=settings.max_upload_bytes) as form:
                fields = {k: v for k, v in form.items() if isinstance(v, str)}
                for kind in ("image", "video"):
                    upload = form.get(kind)
                    if isinstance(upload, UploadFile):
                        data = await upload.read(settings.max_upload_bytes + 1)
                        if len(data) > settings.max_upload_bytes:
                            raise PayloadTooLarge(f"{kind} exceeds {settings.max_upload_bytes} bytes")
                        fields[f"_{kind}"] = data
            if isinstance(fields.get("viewed"), str):  # multipart form value: comma-separated ids
                fields["viewed"] = [v for v in fields["viewed"].split(",") if v]
            if "filters" in fields:
                fields["filters"] = _json_filters(fields["filters"])
        elif ctype in ("application/json", ""):
            body = await _read_body(request, settings.max_upload_bytes * 4 // 3 + 65536)
            try:
                parsed = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InvalidInput("request body is not valid JSON", code="invalid_json") from exc
            if not isinstance(parsed, dict):
                raise InvalidInput("request body must be a JSON object", code="invalid_json")
            fields = dict(parsed)
            if "image_base64" in fields:
                fields["_image"] = _b64(fields["image_base64"], "image_base64", settings.max_upload_bytes)
            if "video_base64" in fields:
                fields["_video"] = _b64(fields["video_base64"], "video_base64", settings.max_upload_bytes)
        else:
            return error_response(415, "unsupported_media_type", "send application/json or multipart/form-data")
        facets = fields.get("facets")
        if isinstance(facets, str):  # multipart form value: comma-separated
            facets = [f for f in facets.split(",") if f]
        opts = core.options(
            fields.get("k"),
            fields.get("filters"),
            fields.get("cursor"),
            fields.get("price_min"),
            fields.get("price_max"),
            facets,
            fields.get("viewed"),
            fields.get("rerank"),
        )
        image, video = fields.get("_image"), fields.get("_video")
        if isinstance(image, bytes) and isinstance(video, bytes):
            raise InvalidInput("send an image or a video, not both", code="invalid_request")
        if isinstance(image, bytes):
            result = await run_in_threadpool(core.search_image, image, opts)
        elif isinstance(video, bytes):
            result = await run_in_threadpool(core.search_video, video, opts)
        elif "text" in fields:
            result = await run_in_threadpool(core.search_text, fields["text"], opts)
        else:
            raise InvalidInput(
                "give a text, an image or a video (multipart field 'image'/'video', or image_base64/video_base64)",
                code="empty_query",
            )
        return JSONResponse(result.to_json())

    @app.get("/v1/products/{product_id}")
    async def product(product_id: str) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(core.product, product_id))

    @app.get("/v1/products/{product_id}/similar")
    async def similar(product_id: str, request: Request) -> JSONResponse:
        q = request.query_params
        # filters as in a search's multipart form: one JSON object (the gRPC Similar takes them too)
        flt = _json_filters(q["filters"]) if "filters" in q else None
        opts = core.options(q.get("k"), flt, q.get("cursor"), q.get("price_min"), q.get("price_max"))
        exclude = q.get("exclude_same_group", "false").lower() in ("1", "true", "yes")
        result = await run_in_threadpool(core.similar, product_id, opts, exclude)
        return JSONResponse(result.to_json())

    @app.post("/v1/events/s3", status_code=202)
    async def s3_events(request: Request) -> JSONResponse:
        """Webhook for stores that call one (SeaweedFS's filer, MinIO's webhook target): the same
        S3 event-record JSON as the AMQP path, validated here and forwarded to the events exchange."""
        sink: Callable[[dict[str, Any]], None] | None = getattr(request.app.state, "event_sink", None)
        if sink is None:
            return error_response(404, "not_found", "event ingestion is not configured on this gateway")
        token = core.settings.events_token
        if token and guard_access.open:  # with API keys configured, the ingest scope already decided
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                return error_response(401, "unauthorized", "a valid bearer token is required")
        body = await _read_body(request, MAX_EVENT_BYTES)
        records = parse_event(body)  # InvalidInput -> 400 with the reason; nothing is forwarded
        await run_in_threadpool(sink, json.loads(body))
        return JSONResponse({"accepted": len(records)}, status_code=202)

    @app.get("/v1/products/{product_id}/images/{n}")
    async def product_image(product_id: str, n: int) -> Response:
        found = await run_in_threadpool(core.image_file, product_id, n)
        headers = {"Cache-Control": "public, max-age=86400"}
        if isinstance(found, bytes):  # from the object store: the type is sniffed, never trusted from the key
            kind = sniff_image_type(found)
            return Response(found, media_type=kind, headers={**headers, "X-Content-Type-Options": "nosniff"})
        return FileResponse(found, headers=headers)

    return app
