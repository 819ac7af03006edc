"""The one catalog reader (``products.jsonl``) and query-set reader of DESIGN.md.

Catalog lines: ``{"id", "title", "description", "attributes", "images", "videos", "price"?,
"currency"?}`` with media paths relative to the file.  Query lines: ``{"qid", "text" | "image" |
"video" | "similar_to", "relevant": {id: grade}}`` with paths relative to the query file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prism.errors import InvalidInput

PRODUCT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_TITLE_CHARS = 1_000
MAX_DESCRIPTION_CHARS = 20_000
MAX_ATTRIBUTES = 100

# Attribute values that are bare numbers (article codes, years) carry no meaning for text search.
_CODE_RE = re.compile(r"^[\d\s./-]+$")

StripMode = Literal["none", "title-photo", "photo"]
STRIP_MODES: tuple[StripMode, ...] = ("none", "title-photo", "photo")


@dataclass(frozen=True)
class Product:
    id: str
    title: str
    description: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    images: tuple[str, ...] = ()
    videos: tuple[str, ...] = ()
    price: float | None = None
    currency: str | None = None

    def text(self) -> str:
        """What the product says about itself, as one passage for the text encoder."""
        parts = [self.title.strip()] if self.title.strip() else []
        if self.description.strip():
            parts.append(self.description.strip())
        attrs = [f"{k.replace('_', ' ')}: {v}" for k, v in self.attributes.items() if v and not _CODE_RE.match(v)]
        if attrs:
            parts.append("; ".join(attrs))
        return ". ".join(parts)

    def stripped(self, mode: StripMode) -> Product:
        """The product as seen when only some fields reach the index (``prism eval --strip``)."""
        if mode == "none":
            return self
        title = self.title if mode == "title-photo" else ""
        return Product(id=self.id, title=title, images=self.images, videos=self.videos)

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "attributes": dict(self.attributes),
            "images": list(self.images),
            "videos": list(self.videos),
        }
        if self.price is not None:
            rec["price"] = self.price
        if self.currency:
            rec["currency"] = self.currency
        return rec


def validate_product_id(pid: object) -> str:
    if not isinstance(pid, str) or not PRODUCT_ID_RE.match(pid):
        raise InvalidInput(f"invalid product id {pid!r}: 1-128 characters of A-Z a-z 0-9 . _ : -", code="invalid_id")
    return pid


def _relative_media(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput(f"{what} must be a list of relative paths", code="invalid_record")
    for v in value:
        p = Path(v)
        if p.is_absolute() or ".." in p.parts or "\\" in v or "\x00" in v:
            raise InvalidInput(f"{what} path {v!r} must be relative and stay inside the catalog", code="invalid_record")
    return tuple(value)


def parse_product(rec: object) -> Product:
    """Validate one catalog record; raises InvalidInput with the reason."""
    if not isinstance(rec, dict):
        raise InvalidInput("a catalog record must be a JSON object", code="invalid_record")
    pid = validate_product_id(rec.get("id"))
    title = rec.get("title") or ""
    description = rec.get("description") or ""
    if not isinstance(title, str) or not isinstance(description, str):
        raise InvalidInput("title and description must be strings", code="invalid_record")
    if len(title) > MAX_TITLE_CHARS or len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidInput("title or description too long", code="invalid_record")
    raw_attrs = rec.get("attributes") or {}
    if not isinstance(raw_attrs, dict) or len(raw_attrs) > MAX_ATTRIBUTES:
        raise InvalidInput("attributes must be an object of at most 100 fields", code="invalid_record")
    attrs: dict[str, str] = {}
    for k, v in raw_attrs.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", k):
            raise InvalidInput(f"invalid attribute name {k!r}", code="invalid_record")
        if isinstance(v, (dict, list)):
            raise InvalidInput(f"attribute {k!r} must be a scalar", code="invalid_record")
        if v is not None:
            attrs[k] = str(v)
    price = rec.get("price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0):
        raise InvalidInput("price must be a non-negative number", code="invalid_record")
    currency = rec.get("currency")
    if currency is not None and not isinstance(currency, str):
        raise InvalidInput("currency must be a string", code="invalid_record")
    return Product(
        id=pid,
        title=title,
        description=description,
        attributes=attrs,
        images=_relative_media(rec.get("images"), "images"),
        videos=_relative_media(rec.get("videos"), "videos"),
        price=float(price) if price is not None else None,
        currency=currency,
    )


@dataclass(frozen=True)
class Catalog:
    """A catalog folder: ``products.jsonl`` plus the media it references."""

    root: Path

    @classmethod
    def open(cls, path: Path) -> Catalog:
        path = Path(path)
        root = path.parent if path.is_file() else path
        if not (root / "products.jsonl").is_file():
            raise FileNotFoundError(f"no products.jsonl in {root}")
        return cls(root.resolve())

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def file(self) -> Path:
        return self.root / "products.jsonl"

    def media_path(self, rel: str) -> Path:
        """Resolve a product's media path, refusing anything that escapes the catalog folder."""
        p = (self.root / rel).resolve()
        if not p.is_relative_to(self.root):
            raise InvalidInput(f"media path {rel!r} escapes the catalog", code="invalid_record")
        return p

    def records(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        """Yield (line number, raw record or None, parse error or None) for every non-blank line."""
        with self.file.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line), None
                except json.JSONDecodeError as exc:
                    yield lineno, None, f"line {lineno}: malformed JSON ({exc.msg})"

    def products(self, *, strict: bool = False) -> Iterator[Product]:
        """Valid products in file order; invalid lines are skipped (or raise when ``strict``)."""
        for lineno, rec, err in self.records():
            try:
                if err is not None:
                    raise InvalidInput(err, code="invalid_record")
                yield parse_product(rec)
            except InvalidInput as exc:
                if strict:
                    raise InvalidInput(f"{self.file}:{lineno}: {exc.message}", code=exc.code) from exc

    def __len__(self) -> int:
        return sum(1 for _ in self.records())


QueryKind = str


@dataclass(frozen=True)
class Query:
    qid: str
    relevant: dict[str, int]
    text: str | None = None
    image: Path | None = None
    video: Path | None = None
    similar_to: str | None = None

    @property
    def kind(self) -> QueryKind:
        """The qid's prefix up to its last ``-NNNN`` part (``text-en``, ``image-aug``, ``similar``)."""
        return self.qid.rsplit("-", 1)[0] if "-" in self.qid else self.qid


def read_queries(path: Path) -> list[Query]:
    path = Path(path)
    base = path.parent
    out: list[Query] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            if "qid" not in rec or "relevant" not in rec:
                raise ValueError(f"{path}:{lineno}: a query needs qid and relevant")
            out.append(
                Query(
                    qid=str(rec["qid"]),
                    relevant={str(k): int(v) for k, v in rec["relevant"].items()},
                    text=rec.get("text"),
                    image=base / rec["image"] if rec.get("image") else None,
                    video=base / rec["video"] if rec.get("video") else None,
                    similar_to=str(rec["similar_to"]) if rec.get("similar_to") else None,
                )
            )
    return out
