"""A Chinese -> English glossary of e-commerce fashion terms, read before CC-CEDICT.

CC-CEDICT is a general dictionary: it glosses 上衣 (the "top" of every shop's category tree) as
"jacket; upper outer garment" and 半身裙 (skirt) as "half body skirt", so "黑色上衣" searched for
black jackets.  A shop's search stack keeps its own term list for this (as Elasticsearch's and
Vespa's synonym files do); this is Prism's default one, written from the category trees that
Chinese fashion shops use (tops, bottoms, dresses, outerwear, underwear, footwear, bags,
accessories) and their usual English names -- not from any query set.  An operator extends or
overrides it with a tab-separated file (``PRISM_GATEWAY_GLOSSARY``: ``术语<TAB>gloss[; gloss]``).

Glosses are given best first; the translator weighs later ones less and still prefers words the
catalog uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

_ENTRIES: Final = """
上衣 top; blouse
上装 top
T恤 t-shirt
短袖 short sleeve t-shirt; short sleeve
长袖 long sleeve top; long sleeve
衬衫 shirt; blouse
衬衣 shirt
女衬衫 blouse
雪纺衫 chiffon blouse
背心 vest top; tank top
吊带 strap top; camisole
吊带衫 strap top; camisole
打底衫 basic top
卫衣 sweatshirt; hoodie
连帽卫衣 hoodie
毛衣 sweater; jumper
针织衫 knitted top; cardigan
开衫 cardigan
马甲 waistcoat; gilet
polo衫 polo shirt
外套 jacket; coat
夹克 jacket
大衣 coat
风衣 trench coat
羽绒服 down jacket; padded jacket
棉服 padded jacket
西装 blazer; suit
西服 suit; blazer
皮衣 leather jacket
运动服 sportswear; tracksuit
运动衫 sports top; sweatshirt
裤子 trousers
长裤 trousers
短裤 shorts
牛仔裤 jeans
休闲裤 casual trousers; chinos
运动裤 joggers; track pants
打底裤 leggings
紧身裤 leggings; tights
阔腿裤 wide trousers
九分裤 cropped trousers
工装裤 cargo trousers
西裤 suit trousers
裙子 skirt; dress
半身裙 skirt
短裙 short skirt; skirt
长裙 long skirt; maxi skirt
百褶裙 pleated skirt
牛仔裙 denim skirt
包臀裙 pencil skirt
连衣裙 dress
吊带裙 strappy dress
连体裤 jumpsuit
背带裤 dungarees
内衣 underwear; lingerie
文胸 bra
胸罩 bra
内裤 briefs
三角裤 briefs
平角裤 boxer shorts
睡衣 pyjamas; nightwear
睡裙 nightdress
浴袍 bathrobe
泳衣 swimsuit
泳装 swimwear
比基尼 bikini
泳裤 swim shorts
袜子 socks
丝袜 tights; stockings
连裤袜 tights
鞋 shoes
鞋子 shoes
运动鞋 sports shoes; sneakers; trainers
跑鞋 running shoes
板鞋 sneakers
帆布鞋 canvas shoes
休闲鞋 casual shoes
高跟鞋 heels; high heels
凉鞋 sandals
拖鞋 slippers; flip flops
人字拖 flip flops
靴子 boots
短靴 ankle boots
雪地靴 snow boots
平底鞋 flats; flat shoes
乐福鞋 loafers
皮鞋 formal shoes; leather shoes
包 bag
包包 bag
手提包 handbag
单肩包 shoulder bag
斜挎包 crossbody bag; sling bag
双肩包 backpack
背包 backpack
钱包 wallet
帽子 hat; cap
棒球帽 cap
鸭舌帽 cap
渔夫帽 bucket hat
毛线帽 beanie
围巾 scarf
丝巾 scarf
手套 gloves
腰带 belt
皮带 belt
手表 watch
太阳镜 sunglasses
墨镜 sunglasses
项链 necklace
耳环 earrings
耳钉 earrings
手链 bracelet
手镯 bangle; bracelet
戒指 ring
发夹 hair clip
领带 tie
条纹 striped; stripe
格子 checked; check
碎花 floral
印花 printed; print
纯色 solid
波点 polka dot; dots
牛仔 denim
针织 knitted; knit
蕾丝 lace
真丝 silk
亚麻 linen
男装 men
女装 women
男士 men
女士 women
男式 men
女式 women
男款 men
女款 women
儿童 kids; children
婴儿 baby
童装 kids
男童 boys
女童 girls
"""


def _parse(text: str, source: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        term, sep, glosses = line.replace("\t", " ", 1).partition(" ")
        parts = tuple(g.strip() for g in glosses.split(";") if g.strip())
        if not sep or not term or not parts:
            raise ValueError(f"{source}:{n}: expected 'term<TAB>gloss[; gloss]', got {raw!r}")
        out[term] = parts
    return out


def default_glossary() -> Mapping[str, tuple[str, ...]]:
    """Prism's built-in fashion glossary (term -> glosses, best first)."""
    return MappingProxyType(_parse(_ENTRIES, "prism.glossary"))


def load_glossary(path: Path | None = None) -> Mapping[str, tuple[str, ...]]:
    """The built-in glossary, extended (and overridden term by term) by the file at ``path``."""
    terms = dict(default_glossary())
    if path is not None:
        terms.update(_parse(Path(path).read_text(encoding="utf-8"), str(path)))
    return MappingProxyType(terms)
