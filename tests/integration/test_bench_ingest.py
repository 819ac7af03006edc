"""The ingestion benchmark (``make bench``) on a few products: it must measure what it says.

Each service as its own process, as deployed: the encoders and the fusion service started from
their entry points, Celery worker processes, RabbitMQ and SeaweedFS; the bench reads each
service's model counters from its metrics endpoint and each process's CPU seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from prism.settings import CommonSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_ingest_bench_runs_every_service_as_a_process_and_accounts_for_it(
    shared_data: Path, common_settings: CommonSettings
) -> None:
    from prism.bench_ingest import bench_ingest
    from prism.catalog import Catalog

    catalog = Catalog.open(shared_data / "catalogs" / "myntra")
    result = bench_ingest(common_settings, catalog, 12, (1,), topology="processes")

    run = result["runs"]["1"]
    assert (run["indexed"], run["failed"]) == (12, 0)
    assert run["products_per_s"] > 0 and result["bare_image_products_per_s"] > 0
    assert run["ratio_to_bare"] == pytest.approx(run["products_per_s"] / result["bare_image_products_per_s"])
    # The model counters come from the services' own /metrics: 12 photos went through the image model.
    assert run["image_mean_batch"] >= 1 and 0 < run["image_busy"] <= 1 and 0 < run["text_busy"] <= 1
    cpu = run["cpu_s"]
    assert {"image_encoder", "text_encoder", "fusion", "workers", "seaweedfs", "rabbitmq", "this_process"} <= set(cpu)
    assert cpu["image_encoder"] > 0 and cpu["text_encoder"] > 0 and cpu["workers"] > 0
    assert result["views"] == 3
    assert len(result["bare_image_cores"]) == 2 and all(c > 0 for c in result["bare_image_cores"])
