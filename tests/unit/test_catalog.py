import json
from pathlib import Path

import pytest

from prism.catalog import Catalog, parse_product, read_queries
from prism.errors import InvalidInput

pytestmark = pytest.mark.unit


def test_parse_product_and_text() -> None:
    p = parse_product(
        {
            "id": "0111",
            "title": "Fancy Pants",
            "description": "Soft jersey.",
            "attributes": {"colour": "Blue", "type": "Trousers", "product_code": "111586"},
            "images": ["images/0111.jpg"],
            "price": 19.9,
        }
    )
    assert p.text() == "Fancy Pants. Soft jersey.. colour: Blue; type: Trousers"
    assert p.price == 19.9
    assert p.stripped("photo").text() == "" and p.stripped("photo").images == ("images/0111.jpg",)
    assert p.stripped("title-photo").text() == "Fancy Pants"


@pytest.mark.parametrize(
    "rec",
    [
        [],
        {"id": ""},
        {"id": "../etc"},
        {"id": "a b"},
        {"id": "x" * 200},
        {"id": "1", "title": 3},
        {"id": "1", "attributes": {"bad key": "x"}},
        {"id": "1", "attributes": {"k": {"nested": 1}}},
        {"id": "1", "images": ["/etc/passwd"]},
        {"id": "1", "images": ["../../secret.jpg"]},
        {"id": "1", "price": -3},
        {"id": "1", "price": True},
    ],
)
def test_invalid_records_are_refused(rec: object) -> None:
    with pytest.raises(InvalidInput):
        parse_product(rec)


def test_catalog_reader_skips_bad_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "1", "title": "a"}),
        "{not json",
        json.dumps({"id": "../x"}),
        "",
        json.dumps({"id": "2"}),
    ]
    (tmp_path / "products.jsonl").write_text("\n".join(lines))
    cat = Catalog.open(tmp_path)
    assert [p.id for p in cat.products()] == ["1", "2"]
    assert len(cat) == 4
    with pytest.raises(InvalidInput, match="line 2"):
        list(cat.products(strict=True))
    with pytest.raises(InvalidInput):
        cat.media_path("../../etc/passwd")


def test_query_kinds_and_paths(tmp_path: Path) -> None:
    q = tmp_path / "q.jsonl"
    q.write_text(
        "\n".join(
            json.dumps(x)
            for x in [
                {"qid": "text-en-0001", "text": "blue dress", "relevant": {"1": 2}},
                {"qid": "image-aug-0826164016", "image": "photos/a.jpg", "relevant": {"2": 2}},
                {"qid": "similar-1563", "similar_to": "1563", "relevant": {"3": 1}},
            ]
        )
    )
    qs = read_queries(q)
    assert [x.kind for x in qs] == ["text-en", "image-aug", "similar"]
    assert qs[1].image == tmp_path / "photos/a.jpg"
