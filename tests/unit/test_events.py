"""S3 event records: MinIO's format in, the same format out, every bad record refused with a reason."""

from __future__ import annotations

import json

import pytest

from prism.errors import InvalidInput
from prism.events import RUN_METADATA, build_event, parse_event, product_of_key
from prism.storage import ObjectInfo

pytestmark = pytest.mark.unit

# A record as MinIO 2025 sends it to an AMQP target (keys URL-encoded, user metadata prefixed).
MINIO_RECORD = {
    "EventName": "s3:ObjectCreated:Put",
    "Key": "prism/media/0111565001/front-view.jpg",
    "Records": [
        {
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "awsRegion": "",
            "eventTime": "2026-11-26T01:00:00.000Z",
            "eventName": "s3:ObjectCreated:Put",
            "userIdentity": {"principalId": "prism"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "Config",
                "bucket": {"name": "prism", "arn": "arn:aws:s3:::prism"},
                "object": {
                    "key": "media%2F0111565001%2Ffront-view%2B1.jpg",
                    "size": 52311,
                    "eTag": "9b2cf535f27731c974343645a3985328",
                    "contentType": "image/jpeg",
                    "userMetadata": {"content-type": "image/jpeg", "X-Amz-Meta-Prism-Run": "abc123"},
                    "sequencer": "17F1A2B3C4D5E6F7",
                },
            },
        }
    ],
}


def test_minio_record_parses() -> None:
    (ev,) = parse_event(json.dumps(MINIO_RECORD).encode())
    assert ev.kind == "created" and ev.bucket == "prism"
    assert ev.key == "media/0111565001/front-view+1.jpg"
    assert ev.size == 52311 and ev.content_type == "image/jpeg" and ev.run == "abc123"


def test_build_then_parse_round_trips() -> None:
    info = ObjectInfo("products/0111565001.json", 120, "etag", "application/json", {RUN_METADATA: "r1"})
    ev = build_event("created", "prism", info.key, info=info)
    assert ev["EventName"] == "s3:ObjectCreated:Put" and ev["Key"] == "prism/products/0111565001.json"
    (parsed,) = parse_event(json.dumps(ev))
    assert (parsed.kind, parsed.key, parsed.size, parsed.run) == ("created", info.key, 120, "r1")
    (removed,) = parse_event(build_event("removed", "prism", info.key))
    assert removed.kind == "removed" and removed.key == info.key


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"\xff\xfe", "invalid_event"),
        (b"[1, 2]", "invalid_event"),
        (b"{}", "invalid_event"),
        (json.dumps({"Records": [{"eventName": "s3:ObjectAccessed:Get"}]}).encode(), "unsupported_event"),
        (json.dumps({"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {}}]}).encode(), "invalid_event"),
        (json.dumps(MINIO_RECORD).replace("media%2F0111565001", "..%2F..%2Fetc").encode(), "invalid_key"),
        (json.dumps(MINIO_RECORD).replace("52311", "-1").encode(), "invalid_event"),
        (b"{" + b" " * (2 * 2**20) + b"}", "invalid_event"),
    ],
)
def test_bad_events_are_refused_with_a_reason(body: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_event(body)
    assert err.value.code == code and err.value.message


def test_product_of_key_follows_the_bucket_layout() -> None:
    assert product_of_key("products/0111565001.json") == ("0111565001", "record")
    assert product_of_key("media/0111565001/front.jpg") == ("0111565001", "media")
    assert product_of_key("media/0111565001/sub/front.jpg") == ("0111565001", "media")
    for other in ("catalog/batch-1.jsonl", "products/.json", "products/a/b.json", "media/x", "readme.txt"):
        assert product_of_key(other) is None
