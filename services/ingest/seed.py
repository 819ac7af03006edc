"""``prism seed``: the distributed deployment's smoke test (the compose ``seed`` service).

Uploads the first products of a catalog through the real ingestion path (object store, events,
broker, workers), waits until they are indexed, then asks the gateway for each product by its title
and by its photo and checks that the product comes back near the top.  Exit status 0 only when the
path works end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from prism.catalog import Catalog, Product

log = structlog.get_logger(__name__)


@dataclass
class SmokeResult:
    checked: int = 0
    text_found: int = 0
    photo_found: int = 0

    @property
    def ok(self) -> bool:
        return self.checked > 0 and self.text_found >= 0.8 * self.checked and self.photo_found >= 0.8 * self.checked

    def summary(self) -> dict[str, Any]:
        return {"checked": self.checked, "text_top5": self.text_found, "photo_top5": self.photo_found, "ok": self.ok}


def smoke_queries(gateway: str, catalog: Catalog, products: list[Product], *, api_key: str = "") -> SmokeResult:
    """Each product's title and photo must find it in the top 5."""
    headers = {"X-API-Key": api_key} if api_key else {}
    result = SmokeResult()
    with httpx.Client(base_url=gateway, timeout=60, headers=headers) as client:
        for p in products:
            result.checked += 1
            r = client.post("/v1/search", json={"text": p.title or p.id, "k": 5})
            r.raise_for_status()
            result.text_found += p.id in [h["id"] for h in r.json()["hits"]]
            if p.images:
                photo = catalog.media_path(p.images[0]).read_bytes()
                r = client.post("/v1/search", files={"image": ("photo.jpg", photo)}, data={"k": "5"})
                r.raise_for_status()
                result.photo_found += p.id in [h["id"] for h in r.json()["hits"]]
    log.info("seed.smoke", **result.summary())
    return result
