"""The typed clients against the running gateway: HTTP and gRPC give the same answers; errors map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prism.client import GatewayClient, GrpcGatewayClient
from prism.errors import InvalidInput, NotFound

pytestmark = pytest.mark.integration


def test_http_and_grpc_clients_agree(indexed_suite: Any, myntra_slice: Path) -> None:
    photo = next((myntra_slice / "images").iterdir()).read_bytes()
    with GatewayClient(indexed_suite.url) as http, GrpcGatewayClient(indexed_suite.gateway.grpc.address) as rpc:
        a, b = http.search_text("blue shirt", k=5), rpc.search_text("blue shirt", k=5)
        assert a.ids and a.ids == b.ids
        assert http.search_image(photo, k=3).ids == rpc.search_image(photo, k=3).ids
        blue = http.search_text("shirt", k=5, filters={"colour": ["Blue"]})
        assert blue.ids and all(http.product(i)["attributes"]["colour"] == "Blue" for i in blue.ids)
        nxt = http.search_text("blue shirt", k=5, cursor=a.next_cursor)
        assert not set(nxt.ids) & set(a.ids)
        first, second = rpc.similar(a.ids[:2], k=4)  # one batched call, one page per id
        assert first.ids and a.ids[0] not in first.ids and a.ids[1] not in second.ids
        assert http.similar(a.ids[0], k=4).ids == first.ids
        with pytest.raises(NotFound):
            http.product("no-such-product")
        with pytest.raises(NotFound):
            rpc.similar(["no-such-product"])
        with pytest.raises(InvalidInput) as err:
            http.search_text("", k=5)
        assert err.value.code == "empty_query" or err.value.message
        with pytest.raises(InvalidInput):
            rpc.search_text("x" * 100_000)
