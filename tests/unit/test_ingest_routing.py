"""Which queue an object event lands on, and the record metadata ``prism ingest`` writes for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from prism.catalog import Catalog, parse_product
from prism.events import MEDIA_CHANGED, MEDIA_METADATA, RUN_METADATA, build_event, parse_event
from prism.storage import FolderStore
from services.ingest.app import IngestApp, create_app
from services.ingest.router import route_event
from services.ingest.settings import Settings
from services.ingest.submit import upload_product

pytestmark = pytest.mark.unit


@pytest.fixture
def app() -> Iterator[IngestApp]:
    app = create_app(Settings(broker_url="memory://localhost/").with_broker_prefix("routing"))
    app.declare_topology()
    yield app
    with app.connection_for_write() as conn:  # the in-memory transport's queues outlive the app
        for q in (app.settings.text_queue, app.settings.media_queue):
            conn.default_channel.queue_purge(q)


def _routed(app: IngestApp) -> list[tuple[str, str, bool]]:
    """(queue, product id, media flag) of every task the router published."""
    out = []
    with app.connection_for_write() as conn:
        for queue in (app.settings.text_queue, app.settings.media_queue):
            while (msg := conn.default_channel.basic_get(queue, no_ack=True)) is not None:
                _, kwargs, _ = json.loads(msg.body)
                out.append((queue.rsplit(".", 1)[-1], kwargs["product_id"], kwargs["media"]))
    return sorted(out)


def test_a_record_whose_upload_wrote_media_goes_straight_to_the_media_queue(app: IngestApp) -> None:
    changed = {RUN_METADATA: "r1", MEDIA_METADATA: MEDIA_CHANGED}
    events = [
        build_event("created", "b", "products/new.json", metadata=changed),  # new photos: media queue
        build_event("created", "b", "products/text.json", metadata={RUN_METADATA: "r1"}),  # text queue
        build_event("removed", "b", "products/gone.json", metadata=changed),  # a delete needs no media work
        build_event("created", "b", "media/photo/front.jpg"),  # the store's own media event
    ]
    for ev in events:
        assert route_event(app, ev) == 1
    text, media = app.settings.text_queue.rsplit(".", 1)[-1], app.settings.media_queue.rsplit(".", 1)[-1]
    assert _routed(app) == sorted(
        [(media, "new", True), (text, "text", False), (text, "gone", False), (media, "photo", True)]
    )


def test_upload_marks_the_record_only_when_it_wrote_new_media_bytes(tmp_path: Path) -> None:
    root = tmp_path / "catalog"
    (root / "images").mkdir(parents=True)
    (root / "images" / "p1.jpg").write_bytes(b"photo one")
    rec = {"id": "p1", "title": "blue denim jacket", "images": ["images/p1.jpg"]}
    (root / "products.jsonl").write_text(json.dumps(rec) + "\n")
    catalog, store = Catalog.open(root), FolderStore(tmp_path / "store")
    product = parse_product(rec)

    (first,) = parse_event(upload_product(store, catalog, product, "r1"))
    assert first.media_changed and first.run == "r1"
    (again,) = parse_event(upload_product(store, catalog, product, "r2"))  # same bytes: nothing written
    assert not again.media_changed and again.run == "r2"
    assert store.stat("products/p1.json").metadata == {RUN_METADATA: "r2"}  # the stale hint is gone
    (root / "images" / "p1.jpg").write_bytes(b"photo two")
    (edited,) = parse_event(upload_product(store, catalog, product, "r3"))
    assert edited.media_changed
