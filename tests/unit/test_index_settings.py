"""Qdrant cluster settings of the services that open the index: environment -> create_collection arguments."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.fusion.settings import Settings as FusionSettings
from services.gateway.settings import Settings as GatewaySettings

pytestmark = pytest.mark.unit


def test_shards_and_replicas_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISM_FUSION_QDRANT_URL", "http://qdrant:6333")
    monkeypatch.setenv("PRISM_FUSION_QDRANT_SHARD_NUMBER", "6")
    monkeypatch.setenv("PRISM_FUSION_QDRANT_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("PRISM_FUSION_QDRANT_WRITE_CONSISTENCY_FACTOR", "2")
    index = FusionSettings().index_settings()
    assert index.url == "http://qdrant:6333" and index.path is None
    assert index.distribution() == {"shard_number": 6, "replication_factor": 3, "write_consistency_factor": 2}


def test_unset_distribution_leaves_it_to_the_server() -> None:
    assert GatewaySettings().index_settings().distribution() == {}
    assert FusionSettings(qdrant_replication_factor=2).index_settings().distribution() == {"replication_factor": 2}


@pytest.mark.parametrize(
    "fields",
    [
        {"qdrant_shard_number": 0},
        {"qdrant_replication_factor": 0},
        {"qdrant_write_consistency_factor": 3, "qdrant_replication_factor": 2},
        {"qdrant_write_consistency_factor": 2},  # one copy by default
    ],
)
def test_impossible_distributions_are_refused(fields: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        FusionSettings(**fields)
