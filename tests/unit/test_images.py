"""Safe decoding of untrusted images: prism.media.images (all inputs generated in memory)."""

from __future__ import annotations

import io
import random
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from prism.errors import MediaError, PayloadTooLarge
from prism.media.images import (
    ALLOWED_IMAGE_FORMATS,
    ImageLimits,
    decode_image,
    probe_image,
)

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------------------------------------
# helpers


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: list[bytes]) -> bytes:
    """A PNG built byte by byte (for what Pillow cannot write: 16-bit RGB, lying headers)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + row for row in rows))  # filter type 0 per row
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def huge_png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares width x height RGB pixels (a decompression-bomb shape)."""
    return raw_png(width, height, 8, 2, [b"\x00" * 9])  # the data is far too short: never decoded


def error_code(data: bytes, limits: ImageLimits | None = None) -> str:
    with pytest.raises(MediaError) as info:
        decode_image(data) if limits is None else decode_image(data, limits)
    return info.value.code


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def px(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = im.getpixel(xy)
    assert isinstance(value, tuple)
    return value


# ---------------------------------------------------------------------------------------------
# refused inputs


def test_empty_bytes() -> None:
    assert error_code(b"") == "empty_media"
    with pytest.raises(MediaError) as info:
        probe_image(b"")
    assert info.value.code == "empty_media"


def test_payload_over_max_bytes() -> None:
    data = encode(Image.new("RGB", (64, 64), "red"), "PNG")
    with pytest.raises(PayloadTooLarge) as info:
        decode_image(data, ImageLimits(max_bytes=len(data) - 1))
    assert info.value.code == "payload_too_large"
    assert info.value.http_status == 413
    decode_image(data, ImageLimits(max_bytes=len(data)))  # exactly at the limit is fine


def test_payload_over_default_limit() -> None:
    data = b"\xff\xd8\xff" + b"\x00" * (20 * 2**20)  # 20 MiB + 3 bytes, never parsed
    with pytest.raises(PayloadTooLarge):
        decode_image(data)
    with pytest.raises(PayloadTooLarge):
        probe_image(data)


def test_truncated_jpeg() -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, "JPEG", quality=90)
    assert error_code(data[: len(data) // 2]) == "corrupt_image"
    assert error_code(data[:200]) == "corrupt_image"
    # the header alone is still readable: probing does not decode pixels
    assert probe_image(data[: len(data) // 2]) == ("JPEG", 64, 64)


def test_truncated_png() -> None:
    rng = np.random.default_rng(1)
    data = encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "PNG")
    assert error_code(data[: len(data) // 2]) == "corrupt_image"


def test_corrupt_png_crc() -> None:
    data = bytearray(encode(Image.new("RGB", (8, 8), "red"), "PNG"))
    data[20] ^= 0xFF  # inside IHDR: the CRC no longer matches
    assert error_code(bytes(data)) == "corrupt_image"


def test_text_bytes() -> None:
    with pytest.raises(MediaError) as info:
        decode_image(b"hello, this is not an image\nat all\n")
    assert info.value.code == "unsupported_media_type"
    assert "text" in str(info.value)


def test_svg_bytes() -> None:
    svg = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10" fill="red"/></svg>'
    )
    with pytest.raises(MediaError) as info:
        decode_image(svg)
    assert info.value.code == "unsupported_media_type"
    assert "SVG" in str(info.value)
    assert error_code(b'<svg xmlns="http://www.w3.org/2000/svg"></svg>') == "unsupported_media_type"


def test_pdf_bytes() -> None:
    pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n"
    with pytest.raises(MediaError) as info:
        decode_image(pdf)
    assert info.value.code == "unsupported_media_type"
    assert "PDF" in str(info.value)


def test_tiff_is_refused_by_name() -> None:
    with pytest.raises(MediaError) as info:
        decode_image(encode(Image.new("RGB", (4, 4), "red"), "TIFF"))
    assert info.value.code == "unsupported_media_type"
    assert "TIFF" in str(info.value)


def test_unknown_binary() -> None:
    assert error_code(bytes(range(256)) * 4) == "unsupported_media_type"


def test_allowed_formats_can_be_narrowed() -> None:
    data = encode(Image.new("RGB", (4, 4), "red"), "PNG")
    limits = ImageLimits(allowed_formats=frozenset({"JPEG"}))
    with pytest.raises(MediaError) as info:
        decode_image(data, limits)
    assert info.value.code == "unsupported_media_type"
    assert "PNG" in str(info.value)


def test_huge_png_header_refused_instantly() -> None:
    data = huge_png_header(30000, 30000)
    assert len(data) < 100
    start = time.perf_counter()
    assert error_code(data) == "image_too_large"
    with pytest.raises(MediaError) as info:
        probe_image(data)
    assert info.value.code == "image_too_large"
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    "size",
    [
        (7000, 7000),  # over our 40 MP limit, under Pillow's warning threshold (~89 MP)
        (10000, 10000),  # over Pillow's DecompressionBombWarning threshold: must not warn
        (20000, 10000),  # over Pillow's DecompressionBombError threshold (~179 MP)
        (65535, 1),  # fine by pixel count
    ],
)
def test_pixel_limit_from_header(size: tuple[int, int]) -> None:
    width, height = size
    data = huge_png_header(width, height)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if width * height > 40_000_000:
            assert error_code(data) == "image_too_large"
        else:
            assert probe_image(data) == ("PNG", width, height)
            assert error_code(data) == "corrupt_image"  # its pixel data is missing


def test_custom_pixel_limit() -> None:
    data = encode(Image.new("RGB", (100, 100), "red"), "PNG")
    assert error_code(data, ImageLimits(max_pixels=9_999)) == "image_too_large"
    assert decode_image(data, ImageLimits(max_pixels=10_000)).size == (100, 100)


def test_fuzzed_inputs_only_raise_media_errors() -> None:
    rng = random.Random(1234)
    base = Image.fromarray(np.random.default_rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    seeds = [
        encode(base, "JPEG"),
        encode(base, "PNG"),
        encode(base.convert("RGBA"), "PNG"),
        encode(base.convert("P"), "GIF"),
        encode(base, "WEBP"),
        encode(base, "BMP"),
    ]
    for _ in range(400):
        data = bytearray(rng.choice(seeds))
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            im = decode_image(bytes(data))
        except MediaError as exc:
            assert exc.code in {"empty_media", "unsupported_media_type", "image_too_large", "corrupt_image"}
        else:
            assert im.mode == "RGB"


def test_warning_filters_are_restored() -> None:
    before = list(warnings.filters)
    decode_image(encode(Image.new("RGB", (4, 4), "red"), "PNG"))
    with pytest.raises(MediaError):
        decode_image(huge_png_header(10000, 10000))
    assert warnings.filters == before


# ---------------------------------------------------------------------------------------------
# accepted inputs, converted to RGB


def test_allowed_formats() -> None:
    assert ALLOWED_IMAGE_FORMATS == frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP"})


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "GIF"])
def test_lossless_formats_round_trip(fmt: str) -> None:
    colour = (200, 30, 60)
    kwargs: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(Image.new("RGB", (17, 9), colour), fmt, **kwargs)
    im = decode_image(data)
    assert im.mode == "RGB"
    assert im.size == (17, 9)
    assert close(px(im, (8, 4)), colour, 0 if fmt != "GIF" else 8)
    assert probe_image(data) == (fmt, 17, 9)


def test_lossy_webp() -> None:
    im = decode_image(encode(Image.new("RGB", (32, 32), (0, 0, 255)), "WEBP", quality=80))
    assert close(px(im, (16, 16)), (0, 0, 255), 12)


def test_jpeg() -> None:
    im = decode_image(encode(Image.new("RGB", (33, 21), (10, 200, 10)), "JPEG", quality=95))
    assert im.size == (33, 21)
    assert close(px(im, (16, 10)), (10, 200, 10), 6)


def test_one_pixel_image() -> None:
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
        im = decode_image(encode(Image.new("RGB", (1, 1), (255, 255, 255)), fmt))
        assert im.size == (1, 1)
        assert im.mode == "RGB"


def test_cmyk_jpeg() -> None:
    # pure cyan+yellow ink = green; Pillow writes (and reads back) an Adobe CMYK JPEG
    data = encode(Image.new("CMYK", (16, 16), (255, 0, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    im = decode_image(data)
    assert im.mode == "RGB"
    assert close(px(im, (8, 8)), (0, 255, 0), 8)
    black = decode_image(encode(Image.new("CMYK", (16, 16), (0, 0, 0, 255)), "JPEG", quality=95))
    assert close(px(black, (8, 8)), (0, 0, 0), 8)


def test_16bit_greyscale_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 32896, 65535, 16448]], dtype=np.uint16)  # 0, mid-grey, white, quarter
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    im = decode_image(data)
    assert im.mode == "RGB"
    assert px(im, (0, 0)) == (0, 0, 0)
    assert px(im, (1, 0)) == (128, 128, 128)  # a naive convert would clip this to 255
    assert px(im, (2, 0)) == (255, 255, 255)
    assert px(im, (3, 0)) == (64, 64, 64)


def test_16bit_rgb_png() -> None:
    row = struct.pack(">3H", 0x8080, 0x4040, 0xFFFF) * 3
    data = raw_png(3, 2, 16, 2, [row, row])
    im = decode_image(data)
    assert im.mode == "RGB"
    assert im.size == (3, 2)
    assert close(px(im, (1, 1)), (128, 64, 255), 1)


def test_16bit_rgba_png_on_white() -> None:
    row = struct.pack(">4H", 0xFFFF, 0, 0, 0) + struct.pack(">4H", 0xFFFF, 0, 0, 0xFFFF)
    im = decode_image(raw_png(2, 1, 16, 6, [row]))
    assert px(im, (0, 0)) == (255, 255, 255)
    assert px(im, (1, 0)) == (255, 0, 0)


def test_rgba_transparent_background_becomes_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # transparent *black*
    rgba.paste((255, 0, 0, 255), (3, 3, 7, 7))
    rgba.putpixel((0, 9), (0, 0, 255, 128))  # half-transparent blue
    im = decode_image(encode(rgba, "PNG"))
    assert im.mode == "RGB"
    assert px(im, (0, 0)) == (255, 255, 255)
    assert px(im, (5, 5)) == (255, 0, 0)
    assert close(px(im, (0, 9)), (127, 127, 255), 1)


def test_la_png_on_white() -> None:
    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((1, 1), (50, 255))
    im = decode_image(encode(la, "PNG"))
    assert px(im, (0, 0)) == (255, 255, 255)
    assert px(im, (1, 1)) == (50, 50, 50)


def test_palette_png_with_transparency() -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)  # index 0 black, 1 red
    pal.paste(1, (2, 2, 6, 6))
    data = encode(pal, "PNG", transparency=0)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    im = decode_image(data)
    assert px(im, (0, 0)) == (255, 255, 255)  # the transparent black index
    assert px(im, (4, 4)) == (255, 0, 0)


def test_palette_png_without_transparency() -> None:
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0, 0, 0] * 254)
    assert px(decode_image(encode(pal, "PNG")), (1, 1)) == (10, 20, 30)


def test_greyscale_and_bilevel() -> None:
    assert px(decode_image(encode(Image.new("L", (4, 4), 77), "PNG")), (0, 0)) == (77, 77, 77)
    one = Image.new("1", (4, 4), 0)
    one.putpixel((1, 1), 1)
    im = decode_image(encode(one, "PNG"))
    assert px(im, (0, 0)) == (0, 0, 0)
    assert px(im, (1, 1)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    src = Image.new("RGB", (40, 20), (255, 0, 0))
    src.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    data = encode(src, "JPEG", quality=95, exif=exif.tobytes())
    im = decode_image(data)
    assert im.size == (20, 40)
    assert close(px(im, (10, 5)), (255, 0, 0), 10)  # what was on the left is now on top
    assert close(px(im, (10, 35)), (0, 0, 255), 10)
    assert probe_image(data) == ("JPEG", 20, 40)
    assert "exif" not in im.info  # the orientation cannot be applied a second time


def test_malformed_exif_is_ignored() -> None:
    data = encode(Image.new("RGB", (8, 4), "red"), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    assert decode_image(data).size == (8, 4)


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (12, 12), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    assert getattr(Image.open(io.BytesIO(buf.getvalue())), "n_frames", 1) == 3
    im = decode_image(buf.getvalue())
    assert im.mode == "RGB"
    assert close(px(im, (6, 6)), (255, 0, 0), 4)


def test_animated_webp_first_frame() -> None:
    frames = [Image.new("RGB", (12, 12), c) for c in ((0, 255, 0), (255, 0, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=40, lossless=True)
    assert close(px(decode_image(buf.getvalue()), (6, 6)), (0, 255, 0), 2)


def test_animated_png_first_frame() -> None:
    frames = [Image.new("RGB", (12, 12), c) for c in ((0, 0, 255), (255, 0, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:], duration=40)
    assert px(decode_image(buf.getvalue()), (6, 6)) == (0, 0, 255)


def test_transparent_gif_on_white() -> None:
    pal = Image.new("P", (6, 6), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    pal.putpixel((3, 3), 1)
    im = decode_image(encode(pal, "GIF", transparency=0))
    assert px(im, (0, 0)) == (255, 255, 255)
    assert px(im, (3, 3)) == (0, 255, 0)


def test_mpo_counts_as_jpeg() -> None:
    frames = [Image.new("RGB", (16, 8), "red"), Image.new("RGB", (16, 8), "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "MPO", save_all=True, append_images=frames[1:])
    data = buf.getvalue()
    assert probe_image(data) == ("JPEG", 16, 8)
    assert close(px(decode_image(data), (8, 4)), (255, 0, 0), 8)


def test_returned_image_is_detached() -> None:
    im = decode_image(encode(Image.new("RGB", (5, 5), "red"), "PNG"))
    assert type(im) is Image.Image  # a plain in-memory image, not a lazy file-backed one
    assert im.info == {}
