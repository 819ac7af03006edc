"""The gateway's API keys, scopes and rate limits over HTTP (a second app over the suite's core)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.gateway.access import Access, RateLimiter, parse_keys
from services.gateway.http import create_app

pytestmark = pytest.mark.integration

APP_KEY = "app-key-0123456789abcdef"
CMS_KEY = "cms-key-0123456789abcdef"


@pytest.fixture
def client(indexed_suite: Any) -> Any:
    keys = parse_keys([f"app:{APP_KEY}:search", f"cms:{CMS_KEY}:ingest"])
    app = create_app(indexed_suite.gateway.core, access=Access(keys, RateLimiter(rate=1.0, burst=3)))
    with TestClient(app) as c:
        yield c


def test_missing_or_wrong_key_is_401_and_wrong_scope_403(client: Any) -> None:
    body = {"text": "blue shirt", "k": 3}
    assert client.post("/v1/search", json=body).status_code == 401
    r = client.post("/v1/search", json=body, headers={"X-API-Key": "nope-" + APP_KEY})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = client.post("/v1/search", json=body, headers={"X-API-Key": CMS_KEY})
    assert r.status_code == 403 and "search" in r.json()["error"]["message"]
    r = client.post("/v1/events/s3", json={"Records": []}, headers={"Authorization": f"Bearer {APP_KEY}"})
    assert r.status_code == 403  # the search scope cannot ingest
    assert client.post("/v1/search", json=body, headers={"X-API-Key": APP_KEY}).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200


def test_a_key_past_its_rate_gets_429_with_retry_after(client: Any) -> None:
    headers = {"X-API-Key": APP_KEY}
    codes = [client.get("/v1/products/does-not-exist", headers=headers).status_code for _ in range(5)]
    assert codes[:3] == [404, 404, 404] and 429 in codes[3:]
    r = client.get("/v1/products/does-not-exist", headers=headers)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
