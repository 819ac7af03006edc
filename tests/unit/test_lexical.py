"""The lexical half of retrieval: analyzer, BM25 sparse vectors, Chinese -> English query terms.

The translator tests load the real CC-CEDICT lexicon and jieba (a few seconds, once per module).
Primary assertions use everyday shopping words that are not in the evaluation query sets; a few
check the examples MODELS.md and DESIGN.md give (蓝色连衣裙, 双肩包, 米色, T恤).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from prism import lexical
from prism.catalog import Product
from prism.lexical import (
    Bm25Encoder,
    FieldWeights,
    QueryTranslator,
    Translation,
    analyze,
    clean_gloss,
    detect_language,
    expand_gloss,
    sparse_vector_params,
    stem,
    term_id,
)

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------------------------ analyzer


def test_analyze_lowercases_splits_and_drops_stop_words() -> None:
    assert analyze("The Red Dress, with a Belt!") == ["red", "dress", "belt"]
    assert analyze("Slim-fit 5-pocket jeans") == ["slim", "fit", "slimfit", "5", "pocket", "jean"]
    assert analyze("") == []
    assert analyze("   ,.;  ") == []
    assert analyze("of the and") == []


@pytest.mark.parametrize(
    ("plural", "singular"),
    [
        ("dresses", "dress"),
        ("watches", "watch"),
        ("boxes", "box"),
        ("shoes", "shoe"),
        ("socks", "sock"),
        ("accessories", "accessory"),
        ("hoodies", "hoodie"),
        ("panties", "panty"),
        ("bras", "bra"),
        ("kurtis", "kurti"),
        ("scarves", "scarve"),  # light stemming: consistent, not a dictionary
    ],
)
def test_plural_and_singular_meet(plural: str, singular: str) -> None:
    assert analyze(plural) == analyze(singular)


def test_stem_leaves_non_plurals_alone() -> None:
    for word in ("dress", "glass", "bus", "this", "jersey", "grey", "2000", "bag"):
        assert stem(word) == word


def test_t_shirt_spellings_are_one_term() -> None:
    forms = ["t-shirt", "T-Shirt", "tshirt", "T shirt", "Tshirts", "tee", "tees", "T-shirts"]
    assert {tuple(analyze(f)) for f in forms} == {("tshirt",)}
    # other single-letter prefixes fold the same way
    assert analyze("V-neck") == analyze("vneck") == ["vneck"]


def test_hyphenated_words_match_open_and_closed_forms() -> None:
    terms = analyze("cross-body bag")
    assert set(analyze("crossbody bag")) <= set(terms)
    assert set(analyze("cross body bag")) <= set(terms)


def test_british_spelling_and_possessives() -> None:
    assert analyze("gray colored") == analyze("grey coloured")
    assert analyze("women's") == analyze("woman") == analyze("Women")
    assert analyze("men's shoes") == ["man", "shoe"]


def test_analyze_ignores_chinese_characters() -> None:
    assert analyze("蓝色 dress") == ["dress"]


# ----------------------------------------------------------------------------- sparse vectors


def _products() -> list[Product]:
    return [
        Product(
            id="p1",
            title="Blue Dress",
            description="A flowing summer dress in soft cotton.",
            attributes={"type": "Dress", "colour": "Blue", "product_code": "123456"},
        ),
        Product(id="p2", title="Red Dress", description="Party dress.", attributes={"type": "Dress", "colour": "Red"}),
        Product(id="p3", title="Blue Jeans", description="Five-pocket jeans.", attributes={"colour": "Blue"}),
        Product(
            id="p4",
            title="Canvas tote bag",
            description="Roomy bag with a blue stripe and an inner pocket for your phone, keys and wallet.",
        ),
        Product(id="p5", title="Wool scarf", description="", attributes={"colour": "Grey"}),
    ]


def test_term_id_is_stable_31_bit() -> None:
    ids = {term_id(t) for t in ("dress", "blue", "tshirt", "连衣裙")}
    assert len(ids) == 4
    assert all(0 <= i < 2**31 for i in ids)
    # BLAKE2b-64 of the UTF-8 term, top bit cleared: the same in every process and release
    assert term_id("dress") == int.from_bytes(
        __import__("hashlib").blake2b(b"dress", digest_size=8).digest(), "big"
    ) & (2**31 - 1)


def test_fit_counts_documents_and_lengths() -> None:
    enc = Bm25Encoder().fit(_products())
    assert enc.n_docs == 5
    assert enc.vocabulary["dress"] == 2
    assert enc.vocabulary["blue"] == 3
    assert "123456" not in enc.vocabulary  # codes are not text
    assert enc.avgdl > 0


def test_idf_orders_rare_over_common_terms() -> None:
    enc = Bm25Encoder().fit(_products())
    assert enc.idf("scarf") > enc.idf("dress") > enc.idf("blue")
    assert enc.idf("never-seen") > enc.idf("scarf")
    # Qdrant's formula
    assert enc.idf("dress") == pytest.approx(math.log((5 - 2 + 0.5) / (2 + 0.5) + 1))


def test_bm25_weights_follow_fields_frequency_and_length() -> None:
    enc = Bm25Encoder(fields=FieldWeights(title=1.0, attributes=1.0, description=0.5)).fit(_products())
    p1, p2, _, p4, _ = _products()
    w1, w2, w4 = enc.document_weights(p1), enc.document_weights(p2), enc.document_weights(p4)
    # "dress" occurs in p1's title, attributes and description: more than "blue" (title, attributes)
    assert w1["dress"] > w1["blue"]
    # the same single mention weighs less in a long document than in a short one
    assert w4["blue"] < w1["blue"]
    # a title mention outweighs a description mention
    assert w4["bag"] > w4["wallet"]
    assert all(0 < v < enc.k1 + 1 for v in w2.values())


def test_bm25_ranks_products_matching_more_query_terms_first() -> None:
    enc = Bm25Encoder().fit(_products())
    prods = _products()
    scores = {p.id: enc.score("blue dress", p) for p in prods}
    assert max(scores, key=lambda k: scores[k]) == "p1"
    assert scores["p1"] > scores["p2"] > 0
    assert scores["p1"] > scores["p3"] > 0
    assert scores["p5"] == 0.0


def test_sparse_vectors_are_deterministic_sorted_and_unique() -> None:
    a = Bm25Encoder().fit(_products())
    b = Bm25Encoder().fit(reversed(_products()))
    for p in _products():
        va, vb = a.encode_document(p), b.encode_document(p)
        assert va == vb
        assert list(va.indices) == sorted(set(va.indices))
        assert len(va.indices) == len(va.values) == len(va)
    q = a.encode_query("Blue dresses, blue!")
    assert q == a.encode_query("blue dress")
    assert q.values == (1.0, 1.0)
    assert sorted(q.indices) == sorted([term_id("blue"), term_id("dress")])


def test_query_vector_idf_folding_matches_score() -> None:
    enc = Bm25Encoder().fit(_products())
    p1 = _products()[0]
    q = enc.encode_query("blue dress", idf=True)
    d = enc.encode_document(p1)
    dot = sum(
        qv * dict(zip(d.indices, d.values, strict=True)).get(qi, 0.0)
        for qi, qv in zip(q.indices, q.values, strict=True)
    )
    assert dot == pytest.approx(enc.score("blue dress", p1))


def test_weighted_query_terms_keep_the_larger_weight() -> None:
    enc = Bm25Encoder().fit(_products())
    w = enc.query_weights([("blue", 1.0), ("dress", 0.5), ("dresses", 0.8), ("the", 1.0)])
    assert w == {"blue": 1.0, "dress": 0.8}
    assert len(enc.encode_query([])) == 0


def test_qdrant_types() -> None:
    from qdrant_client import models as qm

    enc = Bm25Encoder().fit(_products())
    v = enc.encode_document(_products()[0]).to_qdrant()
    assert isinstance(v, qm.SparseVector)
    assert v.indices == sorted(v.indices)
    assert sparse_vector_params().modifier == qm.Modifier.IDF


def test_save_load_round_trip(tmp_path: Path) -> None:
    enc = Bm25Encoder(k1=1.5, b=0.6, fields=FieldWeights(2.0, 1.0, 0.25)).fit(_products())
    path = tmp_path / "stats" / "bm25.json"
    enc.save(path)
    back = Bm25Encoder.load(path)
    assert back.to_dict() == enc.to_dict()
    assert (back.k1, back.b, back.fields) == (1.5, 0.6, FieldWeights(2.0, 1.0, 0.25))
    for p in _products():
        assert back.encode_document(p) == enc.encode_document(p)
    assert back.encode_query("blue scarf", idf=True) == enc.encode_query("blue scarf", idf=True)
    assert not list(tmp_path.glob("stats/*.tmp"))


def test_load_refuses_unknown_version(tmp_path: Path) -> None:
    path = tmp_path / "bm25.json"
    path.write_text('{"version": 99}')
    with pytest.raises(ValueError, match="version"):
        Bm25Encoder.load(path)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Bm25Encoder(k1=0)
    with pytest.raises(ValueError):
        Bm25Encoder(b=1.5)


def test_empty_encoder_and_empty_product() -> None:
    enc = Bm25Encoder()
    assert enc.avgdl == 1.0
    enc.fit([Product(id="x", title="")])
    assert len(enc.encode_document(Product(id="x", title=""))) == 0


# ---------------------------------------------------------------------------- CC-CEDICT glosses


def test_clean_gloss_drops_notes_and_references() -> None:
    assert clean_gloss("blue (color)") == "blue"
    assert clean_gloss("jacket (loanword)") == "jacket"
    assert clean_gloss("surname Bao") is None
    assert clean_gloss("CL:條|条[tiao2]") is None
    assert clean_gloss("variant of 恤[xu4]") is None
    assert clean_gloss("fig. reactionary") is None
    assert clean_gloss("to drag") == "drag"
    assert clean_gloss("a table") == "table"
    assert expand_gloss("(hand)bag") == ["handbag", "bag"]
    assert expand_gloss("sleeveless garment (vest, waistcoat, singlet, tank top etc)") == [
        "sleeveless garment",
        "vest",
        "waistcoat",
        "singlet",
        "tank top",
    ]


# ---------------------------------------------------------------------------------- translator


@pytest.fixture(scope="module")
def translator() -> QueryTranslator:
    """The dictionary's own rules, without the shop glossary that is read before them."""
    t = QueryTranslator(glossary={})
    t.warm()
    return t


def _terms(t: Translation) -> dict[str, float]:
    return {w.term: w.weight for w in t.terms}


def _top(t: Translation) -> set[str]:
    return {w.term for w in t.terms if w.weight >= 0.99}


def test_detect_language() -> None:
    assert detect_language("蓝色连衣裙") == "zh"
    assert detect_language("blue dress") == "en"
    assert detect_language("nike 运动鞋") == "mixed"
    assert detect_language("藍色") == "zh"
    assert detect_language("123 !?") == "none"
    assert detect_language("") == "none"


@pytest.mark.parametrize(
    ("zh", "english"),
    [
        ("围巾", "scarf"),
        ("手套", "glove"),
        ("耳环", "earring"),
        ("项链", "necklace"),
        ("雨衣", "raincoat"),
        ("裙子", "skirt"),
        ("裤子", "trousers"),
        ("墨镜", "sunglasses"),
        ("口红", "lipstick"),
        ("钱夹", "wallet"),
        ("背带裤", "overalls"),
        ("紫色", "purple"),
        ("毛衣", "sweater"),
    ],
)
def test_everyday_words(translator: QueryTranslator, zh: str, english: str) -> None:
    t = translator.translate(zh)
    assert t.language == "zh"
    assert t.text == english
    assert set(analyze(english)) <= _top(t)


def test_colour_and_garment(translator: QueryTranslator) -> None:
    t = translator.translate("红色围巾")
    assert t.text == "red scarf"
    assert {"red", "scarf"} <= _top(t)
    t = translator.translate("黑色皮鞋")
    assert {"black", "shoe"} <= _top(t)
    assert _terms(t)["leather"] == pytest.approx(0.5)  # a modifier counts half


def test_examples_from_the_design(translator: QueryTranslator) -> None:
    t = translator.translate("蓝色连衣裙")
    assert t.text == "blue woman's dress"
    assert {"blue", "dress"} <= _top(t)
    assert "surname" not in _terms(t)
    assert translator.translate("双肩包").text == "backpack"
    assert _top(translator.translate("牛仔裤")) == {"jean"}
    assert "tshirt" in _top(translator.translate("白色T恤"))
    assert "beige" in _top(translator.translate("米色"))


def test_single_characters_take_the_sense_their_compounds_use(translator: QueryTranslator) -> None:
    # 包 lists "to cover, to wrap, ..." before "bag"; the lexicon's 包 compounds are mostly bags
    assert translator.translate("包").text == "bag"
    assert translator.translate("鞋").text == "shoe"
    assert "hat" in _top(translator.translate("帽"))


def test_unknown_compounds_read_head_last(translator: QueryTranslator) -> None:
    # not in CC-CEDICT: the head (last word) counts fully, the modifier half
    t = translator.translate("棒球帽")
    assert t.text == "baseball hat"
    assert _terms(t)["hat"] == 1.0 and _terms(t)["baseball"] == 0.5
    t = translator.translate("紧身裤")
    assert _terms(t)["pant"] == 1.0


def test_unknown_colour_words(translator: QueryTranslator) -> None:
    assert translator.translate("卡其色").text == "khaki"  # 卡其 + 色
    assert translator.translate("杏色").text in ("almond", "apricot")  # 杏 + 色
    coffee = _terms(translator.translate("咖啡色"))  # "coffee color/brown"
    assert coffee["coffee"] == 1.0 and coffee["brown"] > 0.5
    assert "colour" not in coffee


def test_unknown_word_one_character_off_an_entry(translator: QueryTranslator) -> None:
    # 绣鞋 is not in CC-CEDICT; 绣花鞋 (embroidered shoes) is the one entry a character longer
    t = translator.translate("绣鞋")
    assert t.text == "embroidered shoes"
    assert "shoe" in _top(t)


def test_unknown_word_with_a_known_modifier_and_a_head_of_the_same_kind(translator: QueryTranslator) -> None:
    # 旅行包 is not in CC-CEDICT; 旅行袋 is, and 包 and 袋 both head bags in the lexicon
    t = translator.translate("红色旅行包")
    assert t.text == "red travel bag"
    assert {"red", "bag"} <= _top(t)


def test_loanword_matched_by_pinyin_against_the_catalog() -> None:
    t = QueryTranslator(vocabulary={"kaftan": 12, "dress": 400})
    assert t.translate("黑色卡夫坦").text == "black kaftan"
    # without a vocabulary nothing is invented
    assert "kaftan" not in _terms(QueryTranslator().translate("卡夫坦"))


def test_vocabulary_steers_glosses_to_the_catalog_words() -> None:
    vocab = {"coat": 90, "dress": 1000, "gown": 3, "heel": 300, "heeled": 2, "shoe": 500}
    t = QueryTranslator(vocabulary=vocab)
    assert "coat" in _terms(t.translate("大衣"))  # overcoat -> coat
    terms = _terms(t.translate("高跟鞋"))  # high-heeled shoes
    assert "heel" in terms
    dress = _terms(t.translate("连衣裙"))
    assert dress["dress"] > dress.get("gown", 0.0)


def test_mixed_chinese_and_english(translator: QueryTranslator) -> None:
    t = translator.translate("nike运动鞋")
    assert t.language == "mixed"
    assert t.text.startswith("nike ")
    assert {"nike", "shoe"} <= set(_terms(t))
    t = translator.translate("红色 T恤 cotton")
    assert {"red", "tshirt", "cotton"} <= _top(t)


def test_traditional_characters(translator: QueryTranslator) -> None:
    t = translator.translate("藍色連衣裙")
    assert {"blue", "dress"} <= set(_terms(t))


def test_english_passes_through(translator: QueryTranslator) -> None:
    t = translator.translate("Blue Dresses")
    assert (t.language, t.text) == ("en", "Blue Dresses")
    assert t.weighted_terms() == [("blue", 1.0), ("dress", 1.0)]


@pytest.mark.parametrize("text", ["", "   ", "！？", "🙂", "\u3000"])
def test_empty_and_symbol_input(translator: QueryTranslator, text: str) -> None:
    t = translator.translate(text)
    assert t.terms == ()
    assert t.language == "none"


def test_unknown_characters_do_not_fail(translator: QueryTranslator) -> None:
    t = translator.translate("𠮷𠮷")
    assert isinstance(t.text, str)


def test_translation_feeds_the_encoder(translator: QueryTranslator) -> None:
    enc = Bm25Encoder().fit(_products())
    t = translator.translate("蓝色连衣裙")
    scores = {p.id: enc.score(t.weighted_terms(), p) for p in _products()}
    assert max(scores, key=lambda k: scores[k]) == "p1"


def test_lazy_loading_is_thread_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    # start from nothing loaded: the threads race to load the lexicon, which is read exactly once
    monkeypatch.setattr(lexical, "_SHARED_LEXICONS", {})
    monkeypatch.setattr(lexical, "_SHARED_JIEBA", [])
    reads: list[int] = []
    real_read = lexical.read_cedict

    def counting_read(path: Path | None = None) -> lexical.Lexicon:
        reads.append(1)
        return real_read(path)

    monkeypatch.setattr(lexical, "read_cedict", counting_read)
    t = QueryTranslator()
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def work() -> None:
        try:
            start.wait()
            results.append(t.translate("红色围巾").text)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert results == ["red scarf"] * 6
    assert len(reads) == 1


def test_more_like_this_picks_the_distinctive_terms_of_a_product() -> None:
    from prism.catalog import Product
    from prism.lexical import Bm25Encoder

    products = [
        Product(id="a", title="Blue denim jacket", attributes={"colour": "Blue", "type": "Jacket"}),
        Product(id="b", title="Red summer dress", attributes={"colour": "Red", "type": "Dress"}),
        Product(id="c", title="Blue summer dress", attributes={"colour": "Blue", "type": "Dress"}),
    ]
    bm25 = Bm25Encoder().fit(products)
    terms = bm25.more_like_this(products[0], max_terms=3)
    assert len(terms) == 3 and "denim" in terms and all(w > 0 for w in terms.values())
    q = bm25.encode_terms(terms)
    assert len(q) == 3
    # the jacket's own terms score the other blue product above the red one
    scored = {
        p.id: sum(w * bm25.idf(t) * bm25.document_weights(p).get(t, 0.0) for t, w in terms.items())
        for p in products[1:]
    }
    assert scored["c"] > scored["b"]


# ---------------------------------------------------------------------------------- glossary


def test_the_shop_glossary_comes_before_the_dictionary(tmp_path: Path) -> None:
    from prism.glossary import default_glossary, load_glossary

    plain, shop = QueryTranslator(glossary={}), QueryTranslator()
    # CC-CEDICT: 上衣 "jacket; upper outer garment", 半身裙 "half body skirt"
    assert plain.translate("黑色上衣").text == "black jacket"
    assert shop.translate("黑色上衣").text == "black top"
    assert {"black", "top"} <= _top(shop.translate("黑色上衣")) and "jacket" not in _terms(shop.translate("黑色上衣"))
    assert shop.translate("红色半身裙").text == "red skirt"  # segmented as one word, not 半身 + 裙
    assert shop.translate("碎花连衣裙").text == "floral dress"
    assert shop.translate("女式手提包").text == "women handbag"
    assert "上衣" in default_glossary()
    # an operator's file extends and overrides the built-in terms
    extra = tmp_path / "glossary.tsv"
    extra.write_text("# our own words\n上衣\tshirt; top\n库尔塔\tkurta\n", encoding="utf-8")
    terms = load_glossary(extra)
    assert terms["上衣"] == ("shirt", "top") and terms["库尔塔"] == ("kurta",) and terms["半身裙"] == ("skirt",)
    assert QueryTranslator(glossary=terms).translate("蓝色上衣").text == "blue shirt"
    extra.write_text("上衣\n", encoding="utf-8")
    with pytest.raises(ValueError, match="glossary.tsv:1"):
        load_glossary(extra)
