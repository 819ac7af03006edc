"""Object events in the S3 event-record JSON that MinIO sends to its AMQP and webhook targets.

One message is ``{"EventName": "s3:ObjectCreated:Put", "Key": "<bucket>/<key>", "Records": [...]}``
with AWS-style records (``eventName``, ``eventTime``, ``s3.bucket.name``, ``s3.object.key``
URL-encoded, ``size``, ``eTag``, ``contentType``, ``userMetadata``, ``sequencer``).  The same parser
serves RabbitMQ messages and webhook calls; :func:`build_event` writes the same format for stores
that send none (SeaweedFS, the folder store) so ``prism ingest`` produces exactly what MinIO would.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote, unquote_plus

from prism.errors import InvalidInput
from prism.storage import ObjectInfo, validate_key

MAX_EVENT_BYTES = 1 * 2**20
MAX_RECORDS = 1_000
RUN_METADATA = "prism-run"  # user metadata naming the `prism ingest` run that uploaded an object
# User metadata on a record whose upload also wrote new media bytes: its event goes straight to the
# media queue (the media must be encoded anyway), saving the text-queue pass that would forward it.
# Only a hint: a record without it takes the text queue, which forwards when the media changed.
MEDIA_METADATA = "prism-media"
MEDIA_CHANGED = "changed"

EventKind = Literal["created", "removed"]


@dataclass(frozen=True)
class ObjectEvent:
    kind: EventKind
    bucket: str
    key: str
    size: int = 0
    etag: str = ""
    content_type: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    event_time: str = ""
    sequencer: str = ""

    @property
    def run(self) -> str | None:
        return self.metadata.get(RUN_METADATA)

    @property
    def media_changed(self) -> bool:
        return self.metadata.get(MEDIA_METADATA) == MEDIA_CHANGED


def _meta_key(k: str) -> str:
    k = k.lower()
    return k.removeprefix("x-amz-meta-")


def parse_event(body: bytes | str | Mapping[str, Any]) -> list[ObjectEvent]:
    """Validate one notification message; raises InvalidInput with the reason, never half-parses."""
    if isinstance(body, (bytes, bytearray)):
        if len(body) > MAX_EVENT_BYTES:
            raise InvalidInput(f"event larger than {MAX_EVENT_BYTES} bytes", code="invalid_event")
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput("event is not UTF-8", code="invalid_event") from exc
    if isinstance(body, str):
        if len(body) > MAX_EVENT_BYTES:
            raise InvalidInput(f"event larger than {MAX_EVENT_BYTES} bytes", code="invalid_event")
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"event is not JSON: {exc.msg}", code="invalid_event") from exc
    if not isinstance(body, Mapping):
        raise InvalidInput("event must be a JSON object", code="invalid_event")
    records = body.get("Records")
    if not isinstance(records, list) or not records:
        raise InvalidInput("event has no Records", code="invalid_event")
    if len(records) > MAX_RECORDS:
        raise InvalidInput(f"event has more than {MAX_RECORDS} records", code="invalid_event")
    return [_parse_record(r) for r in records]


def _parse_record(r: object) -> ObjectEvent:
    if not isinstance(r, Mapping):
        raise InvalidInput("event record must be an object", code="invalid_event")
    name = r.get("eventName")
    if not isinstance(name, str):
        raise InvalidInput("event record has no eventName", code="invalid_event")
    name = name.removeprefix("s3:")
    if name.startswith("ObjectCreated:"):
        kind: EventKind = "created"
    elif name.startswith("ObjectRemoved:"):
        kind = "removed"
    else:
        raise InvalidInput(f"unsupported event {name!r}", code="unsupported_event")
    s3 = r.get("s3")
    if not isinstance(s3, Mapping):
        raise InvalidInput("event record has no s3 section", code="invalid_event")
    bucket = (s3.get("bucket") or {}).get("name") if isinstance(s3.get("bucket"), Mapping) else None
    obj = s3.get("object")
    if not isinstance(bucket, str) or not bucket or not isinstance(obj, Mapping):
        raise InvalidInput("event record has no bucket or object", code="invalid_event")
    raw_key = obj.get("key")
    if not isinstance(raw_key, str):
        raise InvalidInput("event record has no object key", code="invalid_event")
    key = validate_key(unquote_plus(raw_key))  # S3 URL-encodes keys in events
    size = obj.get("size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput("event record has an invalid size", code="invalid_event")
    meta_raw = obj.get("userMetadata") or {}
    meta = (
        {_meta_key(str(k)): str(v) for k, v in meta_raw.items() if isinstance(v, (str, int))}
        if isinstance(meta_raw, Mapping)
        else {}
    )
    return ObjectEvent(
        kind=kind,
        bucket=bucket,
        key=key,
        size=size,
        etag=str(obj.get("eTag", "") or ""),
        content_type=str(obj.get("contentType", "") or ""),
        metadata=meta,
        event_time=str(r.get("eventTime", "") or ""),
        sequencer=str(obj.get("sequencer", "") or ""),
    )


def build_event(
    kind: EventKind,
    bucket: str,
    key: str,
    *,
    info: ObjectInfo | None = None,
    metadata: Mapping[str, str] | None = None,
    source: str = "prism-publisher",
) -> dict[str, Any]:
    """One notification message as MinIO writes it (``s3:ObjectCreated:Put`` / ``s3:ObjectRemoved:Delete``)."""
    name = "s3:ObjectCreated:Put" if kind == "created" else "s3:ObjectRemoved:Delete"
    now = datetime.now(UTC)
    obj: dict[str, Any] = {"key": quote(validate_key(key), safe="/"), "sequencer": f"{time.time_ns():X}"}
    if info is not None and kind == "created":
        obj.update(size=info.size, eTag=info.etag, contentType=info.content_type)
    meta = {**(info.metadata if info is not None else {}), **(metadata or {})}
    if meta:
        obj["userMetadata"] = {f"X-Amz-Meta-{k.title()}": v for k, v in meta.items()}
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        "eventName": name,
        "userIdentity": {"principalId": source},
        "requestParameters": {"principalId": source, "region": "", "sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": uuid.uuid4().hex},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": source}, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
        "source": {"host": "127.0.0.1", "port": "", "userAgent": source},
    }
    return {"EventName": name, "Key": f"{bucket}/{key}", "Records": [record]}


def product_of_key(key: str) -> tuple[str, Literal["record", "media"]] | None:
    """Which product an object belongs to: ``products/<id>.json`` or ``media/<id>/<file>``."""
    parts = key.split("/")
    if len(parts) == 2 and parts[0] == "products" and parts[1].endswith(".json") and len(parts[1]) > 5:
        return parts[1][: -len(".json")], "record"
    if len(parts) >= 3 and parts[0] == "media" and parts[1]:
        return parts[1], "media"
    return None


def events_for(kind: EventKind, bucket: str, infos: Sequence[ObjectInfo], run: str | None) -> list[dict[str, Any]]:
    meta = {RUN_METADATA: run} if run else None
    return [build_event(kind, bucket, i.key, info=i, metadata=meta) for i in infos]
