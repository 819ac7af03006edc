"""Q4_0 block decoding and the E5S1 file parser, on hand-made bytes (no real model)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from prism.models.e5_convert import (
    DTYPE_F32,
    DTYPE_Q4_0,
    Q4_BLOCK_BYTES,
    QK,
    E5FormatError,
    decode_tensors,
    dequantize_q4_0,
    parse_e5_file,
)

pytestmark = pytest.mark.unit


def q4_block(scale: float, low: list[int], high: list[int]) -> bytes:
    """One block: fp16 scale, then byte j = low[j] | high[j] << 4."""
    assert len(low) == len(high) == 16
    return struct.pack("<e", scale) + bytes(lo | (hi << 4) for lo, hi in zip(low, high, strict=True))


def test_block_size_constants() -> None:
    assert (QK, Q4_BLOCK_BYTES) == (32, 18)


def test_low_nibbles_are_first_half_high_nibbles_second_half() -> None:
    # 0x80 in every byte: low nibble 0 -> (0-8)*d, high nibble 8 -> (8-8)*d.
    out = dequantize_q4_0(struct.pack("<e", 1.0) + b"\x80" * 16)
    assert out.dtype == np.float32
    assert out.shape == (32,)
    np.testing.assert_array_equal(out[:16], np.full(16, -8.0, np.float32))
    np.testing.assert_array_equal(out[16:], np.zeros(16, np.float32))


def test_every_nibble_value_with_known_scale() -> None:
    low = list(range(16))  # element j      = (j - 8) * 0.5
    high = [15 - j for j in range(16)]  # element j + 16 = (7 - j) * 0.5
    out = dequantize_q4_0(q4_block(0.5, low, high))
    expected = [(j - 8) * 0.5 for j in range(16)] + [(7 - j) * 0.5 for j in range(16)]
    np.testing.assert_array_equal(out, np.array(expected, np.float32))
    assert out[0] == -4.0 and out[15] == 3.5 and out[16] == 3.5 and out[31] == -4.0


def test_blocks_keep_their_own_scale_and_order() -> None:
    ones = [9] * 16  # q = 9 -> value = 1 * d
    data = q4_block(2.0, ones, ones) + q4_block(-0.25, ones, [0] * 16) + q4_block(0.0, ones, ones)
    out = dequantize_q4_0(np.frombuffer(data, dtype=np.uint8))
    assert out.shape == (96,)
    np.testing.assert_array_equal(out[:32], np.full(32, 2.0, np.float32))
    np.testing.assert_array_equal(out[32:48], np.full(16, -0.25, np.float32))
    np.testing.assert_array_equal(out[48:64], np.full(16, 2.0, np.float32))  # (0 - 8) * -0.25
    np.testing.assert_array_equal(out[64:], np.zeros(32, np.float32))


def test_fp16_scale_is_decoded_exactly_including_subnormals() -> None:
    tiny = 2.0**-24  # smallest fp16 subnormal
    out = dequantize_q4_0(struct.pack("<H", 0x0001) + bytes([0x0F | 0xF0] * 16))
    np.testing.assert_array_equal(out, np.full(32, 7 * tiny, np.float32))
    big = dequantize_q4_0(struct.pack("<e", 65504.0) + bytes([0x00] * 16))
    np.testing.assert_array_equal(big, np.full(32, -8 * 65504.0, np.float32))


def test_empty_and_malformed_input() -> None:
    assert dequantize_q4_0(b"").shape == (0,)
    with pytest.raises(ValueError, match="multiple of 18"):
        dequantize_q4_0(b"\x00" * 17)
    with pytest.raises(ValueError, match="uint8"):
        dequantize_q4_0(np.zeros(18, dtype=np.int16))


# --------------------------------------------------------------------------- tiny synthetic file

H, FF, VOC, MAXP, TVS = 32, 64, 5, 4, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581hi"]


def _tensor_specs() -> list[tuple[str, int, tuple[int, ...]]]:
    specs: list[tuple[str, int, tuple[int, ...]]] = [
        ("emb.word", DTYPE_Q4_0, (VOC, H)),
        ("emb.pos", DTYPE_F32, (MAXP, H)),
        ("emb.type", DTYPE_F32, (TVS, H)),
        ("emb.ln.w", DTYPE_F32, (H,)),
        ("emb.ln.b", DTYPE_F32, (H,)),
    ]
    for s, shape in [
        ("q", (H, H)),
        ("k", (H, H)),
        ("v", (H, H)),
        ("ao", (H, H)),
        ("fi", (FF, H)),
        ("fo", (H, FF)),
    ]:
        specs.append((f"l0.{s}.w", DTYPE_Q4_0, shape))
        specs.append((f"l0.{s}.b", DTYPE_F32, (shape[0],)))
    for ln in ("aln", "oln"):
        specs += [(f"l0.{ln}.w", DTYPE_F32, (H,)), (f"l0.{ln}.b", DTYPE_F32, (H,))]
    return specs


def build_file(magic: bytes = b"E5S1") -> tuple[bytes, dict[str, np.ndarray]]:
    """A 1-layer model in e5.c's layout; returns the bytes and the values each tensor must decode to."""
    head = magic + struct.pack("<I7ifi", 1, H, 1, 4, FF, VOC, MAXP, TVS, 1e-12, QK)
    blob = b"".join(p.encode() for p in PIECES)
    offs = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob))
    head += offs.tobytes() + np.zeros(len(PIECES), "<f4").tobytes() + blob
    head += struct.pack("<iI", 0, 0)  # empty normalisation map

    specs = _tensor_specs()
    dir_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, _, _ in specs)
    payload = b""
    entries = b""
    expected: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for name, dtype, shape in specs:
        n = int(np.prod(shape))
        if dtype == DTYPE_Q4_0:
            q = rng.integers(0, 16, size=(n // QK, QK))
            scales = rng.uniform(-1, 1, size=n // QK).astype(np.float16)
            raw = b"".join(
                struct.pack("<e", float(sc)) + bytes(int(q[b, j]) | int(q[b, j + 16]) << 4 for j in range(16))
                for b, sc in enumerate(scales)
            )
            expected[name] = ((q - 8) * scales.astype(np.float32)[:, None]).astype(np.float32).reshape(shape)
        else:
            vals = rng.standard_normal(n).astype("<f4")
            raw = vals.tobytes()
            expected[name] = vals.reshape(shape)
        offset = len(head) + dir_size + len(payload)
        entries += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n, offset, len(raw))
        payload += raw
    data = head + struct.pack("<i", len(specs)) + entries + payload
    return data, expected


def test_parse_synthetic_file_and_map_names() -> None:
    data, expected = build_file()
    f = parse_e5_file(data)
    h = f.header
    assert (h.hidden, h.layers, h.heads, h.ffn, h.vocab, h.max_positions, h.type_vocab) == (
        H,
        1,
        4,
        FF,
        VOC,
        MAXP,
        TVS,
    )
    assert (h.bos, h.eos, h.pad, h.unk) == (0, 2, 1, 3)
    assert f.pieces == PIECES
    tensors = decode_tensors(f)
    assert len(tensors) == 5 + 16
    np.testing.assert_array_equal(tensors["embeddings.word_embeddings.weight"], expected["emb.word"])
    np.testing.assert_array_equal(tensors["embeddings.position_embeddings.weight"], expected["emb.pos"])
    np.testing.assert_array_equal(tensors["encoder.layer.0.attention.self.query.weight"], expected["l0.q.w"])
    np.testing.assert_array_equal(tensors["encoder.layer.0.output.dense.weight"], expected["l0.fo.w"])
    np.testing.assert_array_equal(tensors["encoder.layer.0.attention.output.LayerNorm.bias"], expected["l0.aln.b"])
    assert tensors["encoder.layer.0.intermediate.dense.weight"].shape == (FF, H)
    assert all(t.dtype == np.float32 for t in tensors.values())


def test_bad_magic_and_truncation_are_rejected() -> None:
    data, _ = build_file(magic=b"GGUF")
    with pytest.raises(E5FormatError, match="magic"):
        parse_e5_file(data)
    good, _ = build_file()
    with pytest.raises(E5FormatError, match="truncated|past the end"):
        parse_e5_file(good[: len(good) // 2])
