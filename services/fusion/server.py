"""gRPC FusionService: Fuse (no write), Upsert, Delete, State over one :class:`FusionCore`."""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc

from prism.errors import InvalidInput, Unavailable
from prism.fusion import FusionCore, update_from_proto
from prism.gen.common.v1 import types_pb2
from prism.gen.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from prism.grpc_server import GrpcService, Registration
from prism.settings import CommonSettings

from . import model
from .settings import Settings

SERVICE_NAME = "fusion"


class FusionServicer(fusion_pb2_grpc.FusionServiceServicer):
    def __init__(self, load_core: Callable[[], FusionCore], max_products: int) -> None:
        self._load_core = load_core
        self._core: FusionCore | None = None
        self._lock = threading.Lock()
        self.max_products = max_products

    def warmup(self) -> None:
        with self._lock:
            if self._core is None:
                self._core = self._load_core()

    @property
    def core(self) -> FusionCore:
        if self._core is None:
            raise Unavailable("fusion service is still starting")
        return self._core

    def close(self) -> None:
        if self._core is not None:
            self._core.flush()

    def _check_size(self, n: int) -> None:
        if n > self.max_products:
            raise InvalidInput(f"{n} products in one call; at most {self.max_products}", code="batch_too_large")

    def Fuse(self, request: fusion_pb2.FuseRequest, context: grpc.ServicerContext) -> fusion_pb2.FuseResponse:  # noqa: N802
        self._check_size(len(request.items))
        core = self.core
        out = []
        for item in request.items:
            update = update_from_proto(fusion_pb2.ProductVectors(modalities=item))
            vectors, weights = core.fuse(update.modalities)
            out.append(
                fusion_pb2.FusedVectors(
                    vectors={k: types_pb2.Vector(values=v.tolist()) for k, v in vectors.items() if v.ndim == 1},
                    weights=weights,
                )
            )
        return fusion_pb2.FuseResponse(items=out, model_id=core.model_id)

    def Upsert(self, request: fusion_pb2.UpsertRequest, context: grpc.ServicerContext) -> fusion_pb2.UpsertResponse:  # noqa: N802
        self._check_size(len(request.products))
        updates = [update_from_proto(p) for p in request.products]  # all validated before any write
        n = self.core.upsert(updates)
        return fusion_pb2.UpsertResponse(upserted=n, model_id=self.core.model_id)

    def Delete(self, request: fusion_pb2.DeleteRequest, context: grpc.ServicerContext) -> fusion_pb2.DeleteResponse:  # noqa: N802
        self._check_size(len(request.product_ids))
        return fusion_pb2.DeleteResponse(deleted=self.core.delete(list(request.product_ids)))

    def State(self, request: fusion_pb2.StateRequest, context: grpc.ServicerContext) -> fusion_pb2.StateResponse:  # noqa: N802
        self._check_size(len(request.product_ids))
        core = self.core
        states = core.state(list(request.product_ids))
        return fusion_pb2.StateResponse(
            products={
                pid: fusion_pb2.ProductState(
                    content_hash=s.content_hash, media_fingerprint=s.media_fingerprint, vectors=list(s.vectors)
                )
                for pid, s in states.items()
            },
            # Counting is a scan in embedded mode: only when asked (no ids), never per product.
            indexed=core.index.count() if not request.product_ids else 0,
        )


def fusion_grpc_service(servicer: FusionServicer, settings: Settings) -> GrpcService:
    return GrpcService.for_settings(
        SERVICE_NAME,
        [
            Registration(
                fusion_pb2_grpc.add_FusionServiceServicer_to_server,
                servicer,
                fusion_pb2.DESCRIPTOR.services_by_name["FusionService"].full_name,
            )
        ],
        settings,
        warmup=servicer.warmup,
    )


def build_service(settings: Settings, common: CommonSettings) -> tuple[GrpcService, FusionServicer]:
    """The index opens and the layout is read from the encoders in ``warm()`` (NOT_SERVING until then)."""
    servicer = FusionServicer(lambda: model.load(settings), settings.max_products_per_call)
    return fusion_grpc_service(servicer, settings), servicer
