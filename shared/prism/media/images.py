"""Safe decoding of untrusted images (customer photos, catalog uploads).

Everything a caller can get wrong with the bytes ends as a :class:`~prism.errors.MediaError`
(with a stable ``code``) or :class:`~prism.errors.PayloadTooLarge`:

========================== ============================================================
``empty_media``            zero bytes
``payload_too_large``      more than ``ImageLimits.max_bytes`` (``PayloadTooLarge``)
``unsupported_media_type`` not one of the allowed raster formats (SVG, PDF, TIFF, text ...)
``image_too_large``        ``width * height`` above ``ImageLimits.max_pixels``, read from
                           the header before any pixel is decoded
``corrupt_image``          truncated or malformed data, or an image mode we cannot convert
========================== ============================================================

Notes on the design:

* The format is sniffed from the magic bytes first, so a file that is plainly something else
  (SVG, PDF, TIFF, HEIF ...) never reaches a Pillow parser, and the error can name it.  Pillow
  is then only allowed to use the plugins of the allowed formats (``Image.open(formats=...)``).
* Pillow's own decompression-bomb check (``Image.MAX_IMAGE_PIXELS``) warns from inside
  ``Image.open``.  Header parsing runs under ``warnings.catch_warnings`` so neither the warning
  nor anything else Pillow says about a malformed header escapes; our own ``max_pixels`` limit
  (smaller than Pillow's by default) is what refuses the image.  ``catch_warnings`` swaps a
  process-global filter list, so those (short, metadata-only) blocks are serialised by a lock;
  pixel decoding runs outside the lock so decoders in different threads still run in parallel.
  A warning raised as an exception during decoding (``-W error``) becomes ``corrupt_image``.
* ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched: truncated data is an error.
"""

from __future__ import annotations

import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from prism.errors import MediaError, PayloadTooLarge
from prism.media.sniff import sniff_format

__all__ = [
    "ALLOWED_IMAGE_FORMATS",
    "DEFAULT_IMAGE_LIMITS",
    "ImageLimits",
    "decode_image",
    "probe_image",
    "to_rgb",
]

#: Pillow format names of the raster formats we accept.
ALLOWED_IMAGE_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP"})


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    allowed_formats: frozenset[str] = ALLOWED_IMAGE_FORMATS


DEFAULT_IMAGE_LIMITS = ImageLimits()

# Exceptions Pillow (and the stdlib modules it uses) raise on malformed data.  Deliberately a list
# of specific types: a bug in our own code must not be reported as the caller's bad image.
_PIL_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # includes UnidentifiedImageError, "image file is truncated", decoder errors
    ValueError,
    SyntaxError,  # Pillow's traditional "not a valid file" error
    struct.error,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    zlib.error,
    Image.DecompressionBombError,
)
# While decoding pixels, a warning turned into an exception (``-W error``) is a decoding failure too.
_DECODE_ERRORS: tuple[type[Exception], ...] = (*_PIL_ERRORS, Warning)

# EXIF orientation -> transpose (the same table as ``PIL.ImageOps.exif_transpose``).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})

_WHITE = (255, 255, 255)

_warnings_lock = threading.Lock()


@contextmanager
def _quiet_pil() -> Iterator[None]:
    """Silence warnings Pillow emits while parsing headers/metadata of untrusted data.

    ``warnings.catch_warnings`` is not thread-safe (it swaps a global list); the lock keeps our
    own uses from interleaving and leaving an "ignore" filter installed for the whole process.
    """
    with _warnings_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------------------------
# format sniffing


_MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}


def sniff_image_type(data: bytes) -> str:
    """The media type to serve ``data`` as: a known image type from its bytes, else octet-stream."""
    return _MEDIA_TYPES.get(sniff_format(data) or "", "application/octet-stream")


def _unsupported(detected: str | None, limits: ImageLimits) -> MediaError:
    allowed = ", ".join(sorted(limits.allowed_formats))
    what = f"unsupported image format {detected}" if detected else "unrecognised image data"
    return MediaError(f"{what}; allowed formats: {allowed}", code="unsupported_media_type")


def _normalise_format(fmt: str | None) -> str | None:
    # A JPEG carrying an MP (multi-picture) index - common on phones - opens as "MPO".
    return "JPEG" if fmt == "MPO" else fmt


# --------------------------------------------------------------------------------------------
# opening (header only)


def _check_size(data: bytes, limits: ImageLimits) -> None:
    if len(data) == 0:
        raise MediaError("the image is empty (0 bytes)", code="empty_media")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"the image is {len(data)} bytes; the limit is {limits.max_bytes} bytes")


def _too_large(width: int, height: int, limits: ImageLimits) -> MediaError:
    return MediaError(
        f"the image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels} pixels",
        code="image_too_large",
    )


def _open(data: bytes, limits: ImageLimits) -> tuple[ImageFile.ImageFile, str, int]:
    """Open (parse the header of) ``data``; returns the lazy image, its format, EXIF orientation."""
    _check_size(data, limits)
    detected = sniff_format(data)
    if detected is not None and detected not in limits.allowed_formats:
        raise _unsupported(detected, limits)
    formats = sorted(limits.allowed_formats)
    try:
        with _quiet_pil():
            im = Image.open(BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        raise MediaError(  # Pillow refused the declared size itself (over 2 * MAX_IMAGE_PIXELS)
            f"the image declares too many pixels; the limit is {limits.max_pixels} pixels", code="image_too_large"
        ) from exc
    except UnidentifiedImageError as exc:
        if detected is None:
            raise _unsupported(None, limits) from exc
        raise MediaError(f"corrupt {detected} image: cannot parse its header", code="corrupt_image") from exc
    except _PIL_ERRORS as exc:
        raise MediaError(f"corrupt image: {exc}", code="corrupt_image") from exc

    fmt = _normalise_format(im.format)
    if fmt is None or fmt not in limits.allowed_formats:  # defensive: plugins were restricted
        raise _unsupported(fmt, limits)
    width, height = im.size
    if width <= 0 or height <= 0:
        raise MediaError(f"corrupt image: invalid size {width}x{height}", code="corrupt_image")
    if width * height > limits.max_pixels:
        raise _too_large(width, height, limits)
    return im, fmt, _orientation(im)


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (1..8); malformed EXIF is ignored (the pixels may still be fine)."""
    try:
        with _quiet_pil():
            value = im.getexif().get(0x0112, 1)
    except _PIL_ERRORS:
        return 1
    return value if isinstance(value, int) and value in _ORIENTATION else 1


# --------------------------------------------------------------------------------------------
# public API


def probe_image(data: bytes, limits: ImageLimits = DEFAULT_IMAGE_LIMITS) -> tuple[str, int, int]:
    """``(format, width, height)`` of an image without decoding its pixels.

    Applies the same checks as :func:`decode_image` except those that need the pixels (truncated
    data is only found by decoding).  Width and height are those of the decoded image, i.e. after
    the EXIF orientation is applied, so ``decode_image(data).size == probe_image(data)[1:]``.
    An MPO (a JPEG with a multi-picture index) is reported as ``"JPEG"``.
    """
    im, fmt, orientation = _open(data, limits)
    width, height = im.size
    im.close()
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return fmt, width, height


def decode_image(data: bytes, limits: ImageLimits = DEFAULT_IMAGE_LIMITS) -> Image.Image:
    """Decode untrusted image bytes into an 8-bit RGB image with the EXIF orientation applied.

    Animated GIF/WebP/APNG give their first frame; transparency is composited on white.
    """
    im, _fmt, orientation = _open(data, limits)
    guard_load = Image.MAX_IMAGE_PIXELS is not None and limits.max_pixels > Image.MAX_IMAGE_PIXELS
    try:
        if guard_load:  # Pillow's own bomb check could warn while decoding: keep it quiet
            with _quiet_pil():
                im.load()
        else:
            im.load()
        rgb = to_rgb(im)
        if rgb is im:
            rgb = im.copy()  # a plain in-memory Image, detached from the parser
        method = _ORIENTATION.get(orientation)
        if method is not None:
            rgb = rgb.transpose(method)
    except _DECODE_ERRORS as exc:
        raise MediaError(f"corrupt image: {exc}", code="corrupt_image") from exc
    # The metadata described the encoded file (EXIF orientation, palette transparency ...), not
    # this RGB image; dropping it keeps anyone downstream from applying the orientation twice.
    rgb.info.clear()
    return rgb


# --------------------------------------------------------------------------------------------
# mode conversion


def _on_white(im: Image.Image) -> Image.Image:
    """Composite an image with alpha onto a white background (product photos expect white)."""
    rgba = im.convert("RGBA")
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return background


def _grey_to_uint8(im: Image.Image, fmt: str | None) -> Image.Image:
    """Scale a 16/32-bit integer or float greyscale image to 0..255 (linearly, not clipped)."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        scaled = arr.astype(np.float64) / 257.0  # 0..65535 -> 0..255
    elif im.mode == "I":
        a = arr.astype(np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if fmt == "PNG" or (lo >= 0 and hi <= 65535 and hi > 255):
            scaled = a / 257.0  # a 16-bit sample depth (PNG "I" is always 16-bit data)
        elif lo >= 0 and hi <= 255:
            scaled = a
        else:  # arbitrary 32-bit range: stretch what is there
            scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    else:  # "F"
        a = arr.astype(np.float64)
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)
        if lo >= 0 and hi <= 1.0:
            scaled = a * 255.0
        elif lo >= 0 and hi <= 255.0:
            scaled = a
        else:
            scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(out).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert an image of any Pillow mode to 8-bit RGB (alpha composited on white).

    Returns ``im`` itself when it already is RGB without transparency.
    """
    mode = im.mode
    transparency = im.info.get("transparency")
    if mode == "RGB" and transparency is None:
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _on_white(im)
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = _grey_to_uint8(im, im.format)
        if isinstance(transparency, int):  # 16-bit greyscale PNG with a tRNS colour key
            opaque = np.asarray(im) != transparency
            background = Image.new("RGB", grey.size, _WHITE)
            background.paste(grey, mask=Image.fromarray(opaque.astype(np.uint8) * 255))
            return background
        return grey
    if transparency is not None and mode in ("P", "L", "1", "RGB"):
        return _on_white(im)  # palette / colour-key transparency
    # "L", "1", "P", "CMYK" (Pillow already un-inverts Adobe CMYK JPEGs), "YCbCr", "LAB", "HSV"...
    return im.convert("RGB")
