"""CLIP-style checkpoint folders -> (text, image) embedders, on tiny random checkpoints built here.

No CLIP weights install from a registry (MODELS.md), so each test module builds its checkpoints:
a random CLIPModel / ChineseCLIPModel / SiglipModel with a tiny config, a tokenizer trained or written
offline, and the image processor config, saved with ``save_pretrained`` into a temp folder.  The
embeddings must reproduce the model's own forward pass: ``logits_per_text`` divided by
``exp(logit_scale)`` (after subtracting ``logit_bias`` for SigLIP) is exactly the cosine of our
text and image vectors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from prism.models.clip import ClipImageEmbedder, ClipTextEmbedder, load_clip_embedders

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("error")]

# Never let a wrong path turn into a hub retry loop (MODELS.md); set before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SENTENCES = [
    "a blue summer dress",
    "black leather boots",
    "men's slim fit cotton t-shirt, navy",
    "red running shoes with white soles",
    "a photo of a white sneaker",
    "green wool scarf and a grey knitted hat",
]
TEXTS = [
    "blue dress",
    "Black Leather BOOTS",
    "",
    "zebra-striped xylophone ünïcode 漢字",  # unseen words and non-ASCII: byte-level fallback, no unk
    " ".join(["a very long product description"] * 8),  # longer than the 16-token context: truncated
]
DIM = 16
IMAGE = 32  # vision input 32x32, patch 8
CONTEXT = 16  # text max_position_embeddings


def _tower(**extra: Any) -> dict[str, Any]:
    return {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2} | extra


def _vision() -> dict[str, Any]:
    return _tower(image_size=IMAGE, patch_size=8)


def _images() -> list[Image.Image]:
    """Smooth random pictures of assorted sizes and modes (incl. smaller than the input, RGBA, L)."""
    rng = np.random.default_rng(7)
    out: list[Image.Image] = []
    for w, h in [(32, 32), (50, 40), (40, 64), (20, 26), (97, 33), (64, 64)]:
        small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        out.append(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))
    rgba = np.concatenate([rng.integers(0, 256, (30, 36, 3)), rng.integers(0, 256, (30, 36, 1))], axis=2)
    out.append(Image.fromarray(rgba.astype(np.uint8), "RGBA"))
    out.append(Image.fromarray(rng.integers(0, 256, (45, 45), dtype=np.uint8), "L"))
    return out


def _rgb_images() -> list[Image.Image]:
    return [im for im in _images() if im.mode == "RGB"]


def _copy(src: Path, dst: Path, *, without: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*without))
    return dst


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(data | changes), encoding="utf-8")


def _cosines_from_logits(logits_per_text: torch.Tensor, scale: torch.Tensor, bias: float = 0.0) -> np.ndarray:
    return ((logits_per_text - bias) / scale.exp()).detach().numpy()


def _assert_unit_rows(x: np.ndarray) -> None:
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# checkpoint builders


def _train_clip_bpe(folder: Path) -> None:
    """vocab.json + merges.txt of a byte-level BPE trained like CLIP's (lower-cased, ``</w>`` suffix).

    Every byte symbol is in the vocabulary with and without ``</w>``, so no text ever maps to the
    unknown token (which for CLIP is ``<|endoftext|>``, the very token the text tower pools at).
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>", continuing_subword_prefix=""))
    bpe.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    words = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(words), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(SENTENCES, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        for token in (symbol, symbol + "</w>"):
            vocab.setdefault(token, len(vocab))
    merges = [" ".join(m) if isinstance(m, list) else str(m) for m in model["merges"]]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizerFast

    folder = tmp_path_factory.mktemp("ckpt") / "tiny-clip"
    folder.mkdir()
    _train_clip_bpe(folder)
    tokenizer = CLIPTokenizerFast.from_pretrained(folder)  # not CLIPTokenizer(vocab_file=...): MODELS.md
    assert len(tokenizer) > 500
    tokenizer.save_pretrained(folder)  # adds tokenizer.json + tokenizer_config.json
    config = CLIPConfig(
        text_config=_tower(
            vocab_size=len(tokenizer),
            max_position_embeddings=CONTEXT,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=_vision(),
        projection_dim=DIM,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}).save_pretrained(
        folder
    )
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json"):
        assert (folder / name).is_file(), name
    return folder


@pytest.fixture(scope="module")
def clip_ref(clip_dir: Path) -> tuple[Any, Any]:
    """The checkpoint loaded the plain transformers way, as the reference."""
    from transformers import AutoTokenizer, CLIPModel

    return CLIPModel.from_pretrained(clip_dir).eval(), AutoTokenizer.from_pretrained(clip_dir)


@pytest.fixture(scope="module")
def clip(clip_dir: Path) -> tuple[ClipTextEmbedder, ClipImageEmbedder]:
    return load_clip_embedders(clip_dir, device="cpu")


# --------------------------------------------------------------------------------------------
# CLIP


def test_shapes_norms_and_metadata(clip: tuple[ClipTextEmbedder, ClipImageEmbedder], clip_dir: Path) -> None:
    text, image = clip
    assert text.dim == image.dim == DIM
    assert text.model_id == image.model_id
    assert re.fullmatch(r"tiny-clip-[0-9a-f]{8}", text.model_id)
    assert text.device == "cpu" and str(image.device) == "cpu"
    assert text.max_tokens == CONTEXT  # 77 requested, capped at the model's positions
    assert text.model_type == image.model_type == "clip"
    assert image.preprocessing.input_size == (IMAGE, IMAGE)

    t = text.embed(TEXTS, kind="query")
    assert t.shape == (len(TEXTS), DIM)
    _assert_unit_rows(t)
    images = _images()
    v = image.embed(images)
    assert v.shape == (len(images), DIM)
    _assert_unit_rows(v)
    assert text.embed([], kind="query").shape == (0, DIM)
    assert image.embed([]).shape == (0, DIM)
    assert image.embed_views([]).shape == (0, 3, DIM)
    # one model behind both embedders
    assert text._model is image._model


def test_deterministic_and_batch_independent(clip: tuple[ClipTextEmbedder, ClipImageEmbedder], clip_dir: Path) -> None:
    text, image = clip
    images = _images()
    t1, t2 = text.embed(TEXTS, kind="passage"), text.embed(TEXTS, kind="passage")
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(image.embed(images), image.embed(images))
    small_text, small_image = load_clip_embedders(clip_dir, device="cpu", batch_size=2)
    assert small_text.model_id == text.model_id
    np.testing.assert_allclose(small_text.embed(TEXTS, kind="passage"), t1, atol=1e-5)
    np.testing.assert_allclose(small_image.embed(images), image.embed(images), atol=1e-5)
    np.testing.assert_allclose(small_image.embed_views(images), image.embed_views(images), atol=1e-5)
    # row i belongs to input i, whatever the length-sorted batching did
    np.testing.assert_allclose(text.embed(TEXTS[::-1], kind="passage"), t1[::-1], atol=1e-5)
    np.testing.assert_allclose(text.embed([TEXTS[3]], kind="passage")[0], t1[3], atol=1e-5)


def test_cosines_reproduce_model_logits(
    clip: tuple[ClipTextEmbedder, ClipImageEmbedder], clip_ref: tuple[Any, Any]
) -> None:
    text, image = clip
    model, tokenizer = clip_ref
    images = _images()
    inputs = tokenizer(TEXTS, padding=True, truncation=True, max_length=CONTEXT, return_tensors="pt")
    assert inputs["input_ids"].shape[1] == CONTEXT  # the long text really is truncated
    with torch.inference_mode():
        out = model(**inputs, pixel_values=image.pixel_values(images))
    expected = _cosines_from_logits(out.logits_per_text, model.logit_scale)
    ours = text.embed(TEXTS, kind="query") @ image.embed(images).T
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    np.testing.assert_allclose(
        text.embed(TEXTS, kind="query"), out.text_embeds.numpy(), atol=2e-5
    )  # same vectors, not only the same cosines
    np.testing.assert_allclose(image.embed(images), out.image_embeds.numpy(), atol=2e-5)


def test_native_preprocessing_matches_transformers(
    clip: tuple[ClipTextEmbedder, ClipImageEmbedder], clip_dir: Path
) -> None:
    from transformers import CLIPImageProcessorPil

    _, image = clip
    images = _rgb_images()
    reference = CLIPImageProcessorPil.from_pretrained(clip_dir)(images, return_tensors="pt")["pixel_values"]
    ours = image.pixel_values(images)
    assert ours.shape == reference.shape == (len(images), 3, IMAGE, IMAGE)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), atol=1e-5)  # same pixels, float rounding only


def test_embed_views(clip: tuple[ClipTextEmbedder, ClipImageEmbedder]) -> None:
    _, image = clip
    images = _images()
    views = image.embed_views(images)
    assert views.shape == (len(images), 3, DIM)
    _assert_unit_rows(views)
    np.testing.assert_allclose(image.embed_views(images, ["zoom", "full"]), views[:, [2, 0]], atol=1e-5)
    np.testing.assert_allclose(image.embed_views(images, ["center"])[:, 0], views[:, 1], atol=1e-5)
    # a frame already at the input size: "full" is the frame itself, as is the native transform
    square = images[0]
    assert square.size == (IMAGE, IMAGE)
    np.testing.assert_array_equal(
        image.preprocess_uint8([square], "full")[0].permute(1, 2, 0).numpy(), np.asarray(square)
    )
    np.testing.assert_allclose(views[0, 0], image.embed([square])[0], atol=1e-5)
    # the three views differ (centre and zoom crop ever closer)
    assert not np.allclose(views[:, 0], views[:, 1], atol=1e-3)
    assert not np.allclose(views[:, 1], views[:, 2], atol=1e-3)
    with pytest.raises(ValueError, match="unknown view"):
        image.embed_views(images, ["side"])  # type: ignore[list-item]


def test_kind_is_validated_but_adds_no_prefix(clip: tuple[ClipTextEmbedder, ClipImageEmbedder]) -> None:
    text, _ = clip
    np.testing.assert_array_equal(text.embed(TEXTS, kind="query"), text.embed(TEXTS, kind="passage"))
    with pytest.raises(ValueError, match="kind must be"):
        text.embed(TEXTS, kind="document")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="single str"):
        text.embed("blue dress", kind="query")


def test_tokenizer_from_vocab_and_merges_only(
    clip: tuple[ClipTextEmbedder, ClipImageEmbedder], clip_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(clip_dir, tmp_path / "bpe-only", without=("tokenizer.json", "tokenizer_config.json"))
    text, _ = load_clip_embedders(folder, device="cpu")
    np.testing.assert_allclose(text.embed(TEXTS, kind="query"), clip[0].embed(TEXTS, kind="query"), atol=1e-6)


def test_preprocessing_defaults_and_processor_config(
    clip: tuple[ClipTextEmbedder, ClipImageEmbedder], clip_dir: Path, tmp_path: Path
) -> None:
    from transformers import CLIPImageProcessorPil

    images = _rgb_images()
    expected = clip[1].pixel_values(images)
    # no image processor config: CLIP's defaults at the checkpoint's image size (same as saved here)
    bare = _copy(clip_dir, tmp_path / "bare", without=("preprocessor_config.json",))
    _, image = load_clip_embedders(bare, device="cpu")
    torch.testing.assert_close(image.pixel_values(images), expected, rtol=0, atol=0)
    # mean/std named in config.json's vision_config win over OpenAI's
    named = _copy(bare, tmp_path / "named")
    cfg = json.loads((named / "config.json").read_text(encoding="utf-8"))
    cfg["vision_config"] |= {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}
    (named / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    _, image = load_clip_embedders(named, device="cpu")
    assert image.preprocessing.mean == (0.5, 0.5, 0.5) and image.preprocessing.std == (0.25, 0.25, 0.25)
    assert image.model_id != clip[1].model_id  # config.json changed
    # transformers 5 processor_config.json (nested "image_processor"): squash resize, other mean/std
    nested = _copy(bare, tmp_path / "nested")
    processor = CLIPImageProcessorPil(
        size={"height": IMAGE, "width": IMAGE}, do_center_crop=False, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    (nested / "processor_config.json").write_text(
        json.dumps({"image_processor": processor.to_dict(), "processor_class": "CLIPProcessor"}), encoding="utf-8"
    )
    _, image = load_clip_embedders(nested, device="cpu")
    reference = processor(images, return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(image.pixel_values(images).numpy(), reference.numpy(), atol=1e-5)
    # crop larger than the resized image: transformers zero-pads (before normalising), so do we
    padded = _copy(bare, tmp_path / "padded")
    processor = CLIPImageProcessorPil(size={"shortest_edge": 24}, crop_size={"height": IMAGE, "width": IMAGE})
    processor.save_pretrained(padded)
    _, image = load_clip_embedders(padded, device="cpu")
    reference = processor(images, return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(image.pixel_values(images).numpy(), reference.numpy(), atol=1e-5)


def test_errors(clip_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip_embedders(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_clip_embedders(_copy(clip_dir, tmp_path / "no-config", without=("config.json",)))
    unsupported = _copy(clip_dir, tmp_path / "bert")
    _edit_json(unsupported / "config.json", model_type="bert")
    with pytest.raises(ValueError, match="unsupported model_type 'bert'"):
        load_clip_embedders(unsupported)
    no_tok = _copy(clip_dir, tmp_path / "no-tok", without=("tokenizer.json", "vocab.json"))
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_clip_embedders(no_tok)  # merges.txt alone is not a tokenizer
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_clip_embedders(_copy(clip_dir, tmp_path / "no-weights", without=("model.safetensors",)))
    other_eos = _copy(clip_dir, tmp_path / "eos")
    cfg = json.loads((other_eos / "config.json").read_text(encoding="utf-8"))
    cfg["text_config"]["eos_token_id"] = 5
    (other_eos / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(ValueError, match="eos"):
        load_clip_embedders(other_eos, device="cpu")
    wrong_size = _copy(clip_dir, tmp_path / "size")
    _edit_json(wrong_size / "preprocessor_config.json", crop_size={"height": 48, "width": 48})
    with pytest.raises(ValueError, match="48x48 inputs"):
        load_clip_embedders(wrong_size, device="cpu")
    with pytest.raises(ValueError, match="max_tokens"):
        load_clip_embedders(clip_dir, max_tokens=1)
    with pytest.raises(ValueError, match="batch_size"):
        load_clip_embedders(clip_dir, batch_size=0)


# --------------------------------------------------------------------------------------------
# Chinese-CLIP (BERT text tower, WordPiece)

CN_TEXTS = ["蓝色连衣裙", "黑色皮靴", "男士修身棉质T恤，海军蓝", "a blue dress", "red", "裙" * 40]


@pytest.fixture(scope="module")
def cn_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertTokenizerFast, ChineseCLIPConfig, ChineseCLIPImageProcessorPil, ChineseCLIPModel

    folder = tmp_path_factory.mktemp("ckpt") / "tiny-chinese-clip"
    folder.mkdir()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["a", "blue", "dress", "black", "boots", "red", "t", ","]
    (folder / "vocab.txt").write_text(
        "\n".join(specials + list("蓝色连衣裙黑皮靴男士修身棉质恤海军红白") + words) + "\n", encoding="utf-8"
    )
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = ChineseCLIPConfig(
        text_config=_tower(vocab_size=len(tokenizer), max_position_embeddings=40, pad_token_id=tokenizer.pad_token_id),
        vision_config=_vision(),
        projection_dim=DIM,
    )
    torch.manual_seed(1)
    ChineseCLIPModel(config).save_pretrained(folder)
    # OFA-Sys' Chinese-CLIP checkpoints squash the image to a square, no crop
    ChineseCLIPImageProcessorPil(size={"height": IMAGE, "width": IMAGE}, do_center_crop=False).save_pretrained(folder)
    return folder


def test_chinese_clip_reproduces_model_logits(cn_dir: Path) -> None:
    from transformers import AutoTokenizer, ChineseCLIPImageProcessorPil, ChineseCLIPModel

    text, image = load_clip_embedders(cn_dir, device="cpu", batch_size=4)
    assert text.model_type == "chinese_clip" and text.dim == image.dim == DIM
    assert text.max_tokens == 40  # 77 requested, capped at the 40 positions
    model = ChineseCLIPModel.from_pretrained(cn_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(cn_dir)
    inputs = tokenizer(CN_TEXTS, padding=True, truncation=True, max_length=40, return_tensors="pt")
    images = _rgb_images()
    pixels = ChineseCLIPImageProcessorPil.from_pretrained(cn_dir)(images, return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(image.pixel_values(images).numpy(), pixels.numpy(), atol=1e-5)
    with torch.inference_mode():
        out = model(**inputs, pixel_values=image.pixel_values(images))
    t, v = text.embed(CN_TEXTS, kind="query"), image.embed(images)
    _assert_unit_rows(t)
    _assert_unit_rows(v)
    np.testing.assert_allclose(t @ v.T, _cosines_from_logits(out.logits_per_text, model.logit_scale), atol=2e-5)
    views = image.embed_views(_images())
    assert views.shape == (len(_images()), 3, DIM)
    _assert_unit_rows(views)


# --------------------------------------------------------------------------------------------
# SigLIP (texts padded to the full context, no attention mask, sigmoid logits with a bias)

SIGLIP_WORDS = "a blue summer dress black leather boots red running shoes white sneaker green wool scarf grey hat"


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessorPil, SiglipModel

    folder = tmp_path_factory.mktemp("ckpt") / "tiny-siglip"
    folder.mkdir()
    # The real SigLIP tokenizer is SentencePiece (needs the sentencepiece package); a word-level
    # tokenizer.json exercises the same code path here.
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *SIGLIP_WORDS.split()])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(folder)
    config = SiglipConfig(
        text_config=_tower(
            vocab_size=len(vocab), max_position_embeddings=CONTEXT, pad_token_id=0, eos_token_id=1, bos_token_id=None
        ),
        vision_config=_vision(),
    )
    torch.manual_seed(2)
    SiglipModel(config).save_pretrained(folder)
    SiglipImageProcessorPil(size={"height": IMAGE, "width": IMAGE}).save_pretrained(folder)
    return folder


def test_siglip_reproduces_model_logits(siglip_dir: Path) -> None:
    from transformers import AutoTokenizer, SiglipModel

    text, image = load_clip_embedders(siglip_dir, device="cpu", batch_size=3)
    assert text.model_type == "siglip" and text.dim == image.dim == 32  # no projection: the hidden size
    model = SiglipModel.from_pretrained(siglip_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(siglip_dir)
    texts = ["blue dress", "Black leather boots", "a red running shoe", " ".join(SIGLIP_WORDS.split() * 2)]
    inputs = tokenizer(texts, padding="max_length", truncation=True, max_length=CONTEXT, return_tensors="pt")
    images = _images()
    with torch.inference_mode():
        # as SigLIP was trained: every text padded to the full context, no attention mask
        out = model(input_ids=inputs["input_ids"], pixel_values=image.pixel_values(images))
    expected = _cosines_from_logits(out.logits_per_text, model.logit_scale, float(model.logit_bias.detach()))
    t, v = text.embed(texts, kind="passage"), image.embed(images)
    _assert_unit_rows(t)
    np.testing.assert_allclose(t @ v.T, expected, atol=2e-5)
    assert image.embed_views(images).shape == (len(images), 3, 32)
