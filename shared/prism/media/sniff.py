"""Naming a file's format from its magic bytes: one table for images, videos and what is neither.

Only ever used to word a refusal ("GIF is not a supported video container") or to pick the media
type a stored photo is served as; decoding decides what a file really is.
"""

from __future__ import annotations


def sniff_format(data: bytes) -> str | None:
    """Best-effort name of the format of ``data`` from its magic bytes (None when unknown)."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF":
        return {b"WEBP": "WEBP", b"AVI ": "AVI", b"WAVE": "WAV"}.get(head[8:12], "RIFF")
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith(b"%!PS") or head.startswith(b"\xc5\xd0\xd3\xc6"):
        return "PostScript"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIF"
        return "MP4/QuickTime"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "MP4/QuickTime"
    if head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG2000"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL "):
        return "JPEG XL"
    if head.startswith(b"8BPS"):
        return "PSD"
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00"):
        return "ICO"
    if head.startswith(b"qoif"):
        return "QOI"
    if head.startswith(b"PK\x03\x04"):
        return "ZIP"
    if head.startswith(b"\x1f\x8b"):
        return "GZIP"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "Matroska/WebM"
    if head.startswith(b"FLV"):
        return "FLV"
    if head.startswith(b"OggS"):
        return "Ogg"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "ASF/WMV"
    if head.startswith(b"\x06\x0e\x2b\x34"):
        return "MXF"
    if head.startswith(b".RMF"):
        return "RealMedia"
    if head.startswith((b"ID3", b"fLaC")):
        return "audio"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "MPEG program stream"
    if len(data) > 188 and data[0] == 0x47 and data[188] == 0x47:
        return "MPEG transport stream"
    if head.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")):
        return "a raw elementary stream"
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml", b"<!doctype svg")) or b"<svg" in text:
        return "SVG"
    if text.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if text.startswith((b"{", b"[")):
        return "JSON"
    sample = data[:512]
    if sample and all(b in b"\t\n\r" or 32 <= b < 127 or b >= 128 for b in sample):
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return "text"
    return None
