"""PRISM_CLIP_CHECKPOINT: both encoder services serve a CLIP checkpoint's towers, end to end."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from prism.catalog import Catalog
from prism.settings import CommonSettings
from tests.integration.test_clip_checkpoint import clip_dir  # noqa: F401  (module-scoped fixture)

pytestmark = pytest.mark.integration


def test_suite_on_a_clip_checkpoint(clip_dir: Path, myntra_slice: Path, tmp_path: Path) -> None:  # noqa: F811
    from prism.embedded import start_suite
    from prism.models.clip_shared import clip_towers

    common = CommonSettings(clip_checkpoint=clip_dir, cache_dir=tmp_path / "cache", var_dir=tmp_path)
    with start_suite(common=common, index_path=None, http_port=0, collection="clip") as suite:
        text_info, image_info = suite.gateway.core.text.info(), suite.gateway.core.image.info()
        text_tower, image_tower = clip_towers(clip_dir)
        assert text_info.model_id == text_tower.model_id and image_info.model_id == image_tower.model_id
        assert text_info.dim == image_info.dim == text_tower.dim  # one space for both modalities
        # the services answer with the checkpoint's own vectors
        got = suite.gateway.core.text.embed_texts(["blue dress"])[0]
        assert np.allclose(got, text_tower.embed(["blue dress"], kind="query")[0], atol=1e-5)
        report = suite.ingest(Catalog.open(myntra_slice), limit=40, show_progress=False)
        assert report.indexed == 40 and not report.failed
        photo = (myntra_slice / "images").iterdir().__next__().read_bytes()
        with httpx.Client(base_url=suite.url, timeout=60) as client:
            assert len(client.post("/v1/search", json={"text": "black watch", "k": 5}).json()["hits"]) == 5
            hits = client.post("/v1/search", files={"image": ("p.jpg", photo)}, data={"k": "3"}).json()["hits"]
            assert len(hits) == 3
