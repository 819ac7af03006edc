"""Bad and odd media made in memory for tests (never stored in the repository)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    from prism.catalog import Catalog, Product


def jpeg(size: tuple[int, int] = (64, 96), colour: tuple[int, int, int] = (30, 60, 200), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, colour)
    (img.convert(mode) if mode != "RGB" else img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares width x height (a decompression bomb by declaration)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def exif_rotated_jpeg() -> bytes:
    """40x20 pixels stored landscape with EXIF orientation 6 (displayed portrait 20x40)."""
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("P", (16, 16), i) for i in (1, 2, 3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10"/></svg>'
)


def bad_images() -> dict[str, bytes]:
    return {
        "empty": b"",
        "truncated_jpeg": jpeg((200, 200))[:300],
        "text_as_jpg": b"hello, this is not an image at all\n" * 5,
        "png_30000x30000": png_header_only(30000, 30000),
        "svg": SVG,
    }


def odd_images() -> dict[str, bytes]:
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (8, 8, 24, 24))
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([255, 255, 255, 0, 128, 0] + [0] * 762)
    pal.info["transparency"] = 0
    grey16 = Image.new("I;16", (32, 32), 32768)
    return {
        "cmyk_jpeg": jpeg(mode="CMYK"),
        "png_16bit": png(grey16),
        "rgba_png": png(rgba),
        "palette_png": png(pal),
        "exif_rotated": exif_rotated_jpeg(),
        "one_pixel": png(Image.new("RGB", (1, 1), (10, 200, 10))),
        "animated_gif": animated_gif(),
    }


def mp4_of(frames: list[Image.Image], fps: int = 12) -> bytes:
    """An H.264 MP4 of the frames (even-sized, as yuv420p needs)."""
    import av  # here, not at the top: the unit tests that use the photos above need no PyAV
    import numpy as np

    buf = io.BytesIO()
    w, h = frames[0].size
    w, h = w - w % 2, h - h % 2
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = 4
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.asarray(f.convert("RGB").resize((w, h))), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def video_catalog(products: list[Product], src: Catalog, root: Path, reel: bytes, seed: int = 0) -> list[str]:
    """A catalog folder of ``products`` that all carry a video: the first has the real phone video
    ``reel`` and no photo (the video is all the index can know it by), the others their photo and a
    clip synthesized from it. Returns the product ids in order."""
    import json

    import numpy as np

    from prism.training.clips import synthesize_clip

    (root / "videos").mkdir(parents=True)
    (root / "images").mkdir()
    lines = []
    for i, p in enumerate(products):
        rec = {**p.to_record(), "videos": [f"videos/{p.id}.mp4"]}
        if i == 0:
            (root / "videos" / f"{p.id}.mp4").write_bytes(reel)
            rec["images"] = []
        else:
            with Image.open(src.media_path(p.images[0])) as im:
                photo = im.convert("RGB")
            clip = synthesize_clip(photo, np.random.default_rng(seed + i))
            (root / "videos" / f"{p.id}.mp4").write_bytes(mp4_of(clip))
            photo.save(root / "images" / f"{p.id}.jpg")
            rec["images"] = [f"images/{p.id}.jpg"]
        lines.append(json.dumps(rec))
    (root / "products.jsonl").write_text("\n".join(lines) + "\n")
    return [p.id for p in products]
