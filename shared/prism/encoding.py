"""The encoder service shape shared by the text, image and video encoders, and its client.

Every encoder answers one batched ``Embed`` call.  The servicer here does what all of them share:
request validation, the content-addressed vector cache, per-item errors, and micro-batching into
the model; a service only supplies how to *prepare* one raw input (validate text, decode an image)
and how to *run* the model on a list of prepared inputs.

Error contract: in a batch, a bad item gets an ``ItemError`` and the others still succeed; a
single-item request whose item is bad fails with INVALID_ARGUMENT and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
import numpy as np
import structlog

from prism import metrics, tracing
from prism.batching import MicroBatcher
from prism.errors import InvalidInput, NotFound, PrismError, Unavailable
from prism.gen.common.v1 import types_pb2
from prism.gen.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from prism.grpc_server import GrpcService, Registration, channel_options
from prism.logs import REQUEST_ID_HEADER, current_request_id
from prism.settings import ServiceSettings
from prism.storage import ObjectStore
from prism.vector_cache import VectorCache, vector_key
from prism.vectors import normalized_mean

log = structlog.get_logger(__name__)

P = TypeVar("P")
KIND_NAMES = {encoder_pb2.TEXT_KIND_QUERY: "query", encoder_pb2.TEXT_KIND_PASSAGE: "passage"}


@dataclass(frozen=True)
class EncoderLimits:
    max_items: int = 256
    max_text_chars: int = 100_000
    max_media_bytes: int = 20 * 2**20


@dataclass(frozen=True)
class RawItem:
    """One input as received: text, or media bytes; ``kind`` is "query"/"passage" for text."""

    kind: str
    text: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Backend(Generic[P]):
    """What one encoder service supplies: its model and how to feed it."""

    model_id: str
    dim: int
    device: str
    prepare: Callable[[RawItem], P]  # validate/decode one input; raises InvalidInput
    # The model on a batch of prepared inputs: (n, dim), or (n, views, dim) for multi-view encoders.
    run: Callable[[list[P]], np.ndarray]
    warmup_items: tuple[RawItem, ...] = ()
    views: int = 0  # vectors per input (0: one vector)
    # Trained heads: prepared inputs + the model's output -> (n, shared_dim) vectors in the learned
    # text-image space; ``shared_id`` names the heads (their version) so cached vectors follow them.
    shared: Callable[[list[P], np.ndarray], np.ndarray] | None = None
    shared_dim: int = 0
    shared_id: str = ""

    def shape(self) -> tuple[int, ...]:
        return (self.views, self.dim) if self.views else (self.dim,)


@dataclass(frozen=True)
class Encoded:
    """One input's vectors: the network's own (``(dim,)`` or ``(views, dim)``) and, with trained
    heads, the same input in the shared text-image space (``(shared_dim,)``)."""

    native: np.ndarray
    shared: np.ndarray | None = None


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer, Generic[P]):
    """Serves ``Embed``/``Info``; the model is loaded by :meth:`warmup` after the server is up,
    so health reports NOT_SERVING (and calls get UNAVAILABLE) while it loads."""

    def __init__(
        self,
        *,
        service: str,
        modality: str,
        load_backend: Callable[[], Backend[P]],
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        cache: VectorCache | None = None,
        store: ObjectStore | None = None,
        limits: EncoderLimits | None = None,
    ) -> None:
        self.service = service
        self.modality = modality
        self._load_backend = load_backend
        self._backend: Backend[P] | None = None
        self._cache = cache
        self._store = store
        self._max_batch = max_batch
        self.limits = limits or EncoderLimits()
        self.batcher: MicroBatcher[P, Encoded] = MicroBatcher(
            self._run_batch, max_batch=max_batch, max_wait_s=max_wait_s, name=service
        )

    @property
    def backend(self) -> Backend[P]:
        if self._backend is None:
            raise Unavailable(f"{self.service} is still loading its model")
        return self._backend

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def _run_batch(self, items: list[P]) -> list[Encoded]:
        backend = self.backend
        native = backend.run(items)
        if backend.shared is None:
            return [Encoded(row) for row in native]
        shared = backend.shared(items, native)
        return [Encoded(row, vec) for row, vec in zip(native, shared, strict=True)]

    @property
    def dim(self) -> int:
        return self.backend.dim

    def warmup(self) -> None:
        """Load the model, then push one real batch through it so the first request is not slow."""
        backend = self._load_backend()
        if backend.warmup_items:
            backend.run([backend.prepare(i) for i in backend.warmup_items])
        self._backend = backend
        self.batcher.start()

    def close(self) -> None:
        self.batcher.close()
        if self._cache is not None:
            self._cache.close()

    # -- the shared core, also used in-process by benchmarks --------------------------------------
    def embed_items(self, items: Sequence[RawItem], *, ephemeral: bool = False) -> list[Encoded | PrismError]:
        """Encode (vector cache first); ``ephemeral`` items (shoppers' query media) bypass the cache."""
        backend = self.backend
        cache = None if ephemeral else self._cache
        results: list[Encoded | PrismError | None] = [None] * len(items)
        keys: list[str] = []
        shared_keys: list[str] = []
        for item in items:
            content: bytes | str = item.text if item.text is not None else (item.data or b"")
            keys.append(vector_key(backend.model_id, backend.shape(), item.kind, content))
            if backend.shared is not None:
                shared_id = f"{backend.model_id}+{backend.shared_id}"
                shared_keys.append(vector_key(shared_id, (backend.shared_dim,), "shared", content))
        cached = cache.get_many(keys + shared_keys) if cache else {}
        todo: list[int] = []
        prepared: list[P] = []
        hits = 0
        for i, item in enumerate(items):
            native = cached.get(keys[i])
            shared = cached.get(shared_keys[i]) if shared_keys else None
            if native is not None and (shared is not None or not shared_keys):
                results[i] = Encoded(native.reshape(backend.shape()), shared)
                hits += 1
                continue
            try:
                prepared.append(backend.prepare(item))
                todo.append(i)
            except InvalidInput as exc:
                results[i] = exc
        if prepared:
            encoded = self.batcher.submit(prepared)
            fresh: list[tuple[str, np.ndarray]] = []
            for i, enc in zip(todo, encoded, strict=True):
                results[i] = enc
                fresh.append((keys[i], enc.native))
                if shared_keys and enc.shared is not None:
                    fresh.append((shared_keys[i], enc.shared))
            if cache is not None:
                cache.put_many(fresh)
        ok = sum(isinstance(r, Encoded) for r in results)
        metrics.ITEMS.labels(self.service, "ok").inc(ok)
        metrics.ITEMS.labels(self.service, "cached").inc(hits)
        metrics.ITEMS.labels(self.service, "rejected").inc(len(items) - ok)
        return [r for r in results if r is not None]

    # -- gRPC ----------------------------------------------------------------------------------
    def _raw_items(self, request: encoder_pb2.EmbedRequest) -> list[RawItem]:
        n_text, n_media = len(request.texts), len(request.media)
        if n_text and n_media:
            raise InvalidInput("send either texts or media, not both", code="invalid_request")
        n = n_text + n_media
        if n == 0:
            raise InvalidInput("empty batch: nothing to embed", code="empty_batch")
        if n > self.limits.max_items:
            raise InvalidInput(
                f"batch of {n} items exceeds the limit of {self.limits.max_items}", code="batch_too_large"
            )
        kind = KIND_NAMES.get(request.text_kind, "query")
        if self.modality == "text":
            if n_media:
                raise InvalidInput("this encoder embeds texts, not media", code="wrong_modality")
            return [RawItem(kind=kind, text=t) for t in request.texts]
        if n_text:
            raise InvalidInput(f"this encoder embeds {self.modality} media, not texts", code="wrong_modality")
        items: list[RawItem] = []
        for m in request.media:
            which = m.WhichOneof("source")
            if which == "data":
                items.append(RawItem(kind="media", data=bytes(m.data)))
            elif which == "object_key":
                if self._store is None:
                    raise InvalidInput("this encoder has no object store configured", code="no_object_store")
                try:
                    items.append(RawItem(kind="media", data=self._store.get(m.object_key, self.limits.max_media_bytes)))
                except (InvalidInput, NotFound) as exc:
                    raise InvalidInput(f"media {m.object_key!r}: {exc.message}", code=exc.code) from exc
            else:
                items.append(RawItem(kind="media", data=b""))
        return items

    def Embed(self, request: encoder_pb2.EmbedRequest, context: grpc.ServicerContext) -> encoder_pb2.EmbedResponse:  # noqa: N802
        items = self._raw_items(request)
        with tracing.span("encode", service=self.service, items=len(items)):
            results = self.embed_items(items, ephemeral=request.ephemeral)
        if len(results) == 1 and isinstance(results[0], PrismError):
            raise results[0]
        out = encoder_pb2.EmbedResponse(
            model_id=self.model_id, dim=self.dim, space=encoder_pb2.SPACE_NATIVE, shared_dim=self.backend.shared_dim
        )
        for r in results:
            if isinstance(r, PrismError):
                out.embeddings.append(encoder_pb2.Embedding(error=types_pb2.ItemError(code=r.code, message=r.message)))
            else:
                out.embeddings.append(_embedding(r))
        return out

    def Info(self, request: encoder_pb2.InfoRequest, context: grpc.ServicerContext) -> encoder_pb2.InfoResponse:  # noqa: N802
        b = self.backend
        return encoder_pb2.InfoResponse(
            model_id=b.model_id,
            modality=self.modality,
            dim=b.dim,
            max_batch=self._max_batch,
            device=b.device,
            views=b.views,
            shared_dim=b.shared_dim,
            shared_id=b.shared_id,
        )


def _embedding(enc: Encoded) -> encoder_pb2.Embedding:
    vec = enc.native
    shared = types_pb2.Vector(values=enc.shared.tolist()) if enc.shared is not None else None
    if vec.ndim == 2:
        return encoder_pb2.Embedding(
            vector=types_pb2.Vector(values=normalized_mean(vec).tolist()),
            views=[types_pb2.Vector(values=row.tolist()) for row in vec],
            shared=shared,
        )
    return encoder_pb2.Embedding(vector=types_pb2.Vector(values=vec.tolist()), shared=shared)


def _decode(e: encoder_pb2.Embedding) -> Encoded:
    """Native: (dim,) for single-vector embeddings, (views, dim) for multi-view ones."""
    if e.views:
        native = np.stack([np.asarray(v.values, dtype=np.float32) for v in e.views])
    else:
        native = np.asarray(e.vector.values, dtype=np.float32)
    shared = np.asarray(e.shared.values, dtype=np.float32) if e.HasField("shared") else None
    return Encoded(native, shared)


# -- client -------------------------------------------------------------------------------------
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}


def _details_code(details: str | None, default: str) -> tuple[str, str]:
    text = details or ""
    code, sep, msg = text.partition(": ")
    if sep and code.replace("_", "").isalnum() and code.islower():
        return code, msg
    return default, text


class EncoderClient:
    """Typed client for one encoder service; maps gRPC failures to Prism errors."""

    def __init__(self, address: str, *, timeout_s: float = 30.0, max_message_bytes: int = 32 * 2**20) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(address, options=channel_options(max_message_bytes))
        self._stub = encoder_pb2_grpc.EncoderServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._info: encoder_pb2.InfoResponse | None = None

    def close(self) -> None:
        self._channel.close()

    def _metadata(self) -> list[tuple[str, str]]:
        rid = current_request_id()
        md = [(REQUEST_ID_HEADER, rid)] if rid else []
        return md + list(tracing.inject().items())

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout_s, metadata=self._metadata())
        except grpc.RpcError as exc:
            status = exc.code()
            if status == grpc.StatusCode.INVALID_ARGUMENT:
                code, msg = _details_code(exc.details(), "invalid_argument")
                raise InvalidInput(msg, code=code) from exc
            if status in _UNAVAILABLE:
                raise Unavailable(f"encoder at {self.address} unavailable: {status.name}") from exc
            raise

    def info(self) -> encoder_pb2.InfoResponse:
        if self._info is None:
            self._info = self._call(self._stub.Info, encoder_pb2.InfoRequest(), None)
        return self._info

    def embed_texts(self, texts: Sequence[str], kind: str = "query", timeout: float | None = None) -> np.ndarray:
        """Vectors for texts; any rejected text raises InvalidInput (texts are validated upstream)."""
        tk = encoder_pb2.TEXT_KIND_PASSAGE if kind == "passage" else encoder_pb2.TEXT_KIND_QUERY
        resp = self._call(self._stub.Embed, encoder_pb2.EmbedRequest(texts=list(texts), text_kind=tk), timeout)
        rows = []
        for e in resp.embeddings:
            if e.HasField("error"):
                raise InvalidInput(e.error.message, code=e.error.code)
            rows.append(np.asarray(e.vector.values, dtype=np.float32))
        return np.stack(rows) if rows else np.zeros((0, resp.dim), dtype=np.float32)

    def embed_media_encoded(
        self, media: Sequence[bytes | str], timeout: float | None = None, *, ephemeral: bool = False
    ) -> list[Encoded | InvalidInput]:
        """Per item: its :class:`Encoded` vectors, or the InvalidInput that refused it;
        ``ephemeral`` for a shopper's query media (never cached by the encoder)."""
        req = encoder_pb2.EmbedRequest(
            media=[types_pb2.Media(data=m) if isinstance(m, bytes) else types_pb2.Media(object_key=m) for m in media],
            ephemeral=ephemeral,
        )
        resp = self._call(self._stub.Embed, req, timeout)
        out: list[Encoded | InvalidInput] = []
        for e in resp.embeddings:
            if e.HasField("error"):
                out.append(InvalidInput(e.error.message, code=e.error.code))
            else:
                out.append(_decode(e))
        return out

    def embed_media(
        self, media: Sequence[bytes | str], timeout: float | None = None
    ) -> list[np.ndarray | InvalidInput]:
        """Per item: (dim,) or (views, dim) for multi-view encoders, or the InvalidInput that refused it."""
        return [r if isinstance(r, InvalidInput) else r.native for r in self.embed_media_encoded(media, timeout)]

    def embed_one_media(self, data: bytes, timeout: float | None = None) -> np.ndarray:
        res = self.embed_media([data], timeout)[0]
        if isinstance(res, InvalidInput):
            raise res
        return res


def encoder_grpc_service(servicer: EncoderServicer[Any], settings: ServiceSettings) -> GrpcService:
    """Mount an encoder servicer in the shared gRPC wrapper; the model loads in ``warm()``."""
    return GrpcService.for_settings(
        servicer.service,
        [
            Registration(
                encoder_pb2_grpc.add_EncoderServiceServicer_to_server,
                servicer,
                encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name,
            )
        ],
        settings,
        warmup=servicer.warmup,
    )
