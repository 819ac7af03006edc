"""Safe probing and frame sampling of untrusted videos (customer clips, social-media reels).

Every refusal is a :class:`~prism.errors.MediaError` (an ``InvalidInput``) or, for the byte
limit, a :class:`~prism.errors.PayloadTooLarge` (also an ``InvalidInput``), with a stable
``code``:

========================== ============================================================
``empty_video``            zero bytes
``video_too_large``        more than ``VideoLimits.max_bytes`` (checked before opening)
``invalid_video``          cannot be opened or parsed (not a video, truncated, corrupt)
``unsupported_container``  a container/format we do not read (GIF, AVI, raw streams ...)
``unsupported_codec``      a video codec outside ``VideoLimits.codecs``
``no_video_stream``        no video stream (audio only, cover art only)
``video_too_long``         declared duration over ``max_duration_s``, or frame timestamps
                           running past it while decoding (streams that declare nothing)
``video_resolution``       width, height or pixels over the limits (header or decoded frame)
``too_many_frames``        declared or decoded frames over ``max_frames``
``no_frames``              a video stream that yields no decodable frame
``video_timeout``          opening plus decoding took longer than ``decode_timeout_s``
========================== ============================================================

Notes on the design:

* The bytes are opened from memory with a *demuxer whitelist* (``format_whitelist``): FFmpeg
  still probes what the data is, but only the allowed demuxers ever parse it, which keeps the
  dozens of rarely used demuxers away from untrusted input.  ``protocol_whitelist`` names no
  protocol, so a container that references other files or URLs (HLS playlists, QuickTime data
  references, concat lists) cannot make FFmpeg open anything.  ``probesize`` and
  ``analyzeduration`` bound how much FFmpeg reads and decodes to find the streams, and the
  container is opened with PyAV's interrupt timeout, so opening is inside ``decode_timeout_s``.
* :func:`probe_video` checks everything the header declares (container, codec, size, duration,
  frame count) before a pixel is decoded; :func:`decode_video` checks the same things again on
  what the decoder actually produces, because headers lie: frames bigger than declared, pts
  past the declared duration, or more frames than the index lists.  The decoder is also given
  FFmpeg's ``max_pixels`` so it refuses to allocate a frame over the pixel limit.
* Frames are sampled in ONE decoding pass (seeking in a clip with few keyframes decodes from
  the start anyway).  Memory stays bounded however long the clip: only a time grid of about
  ``2 * sample_frames`` frames (the grid coarsens as the clip turns out longer) and the few
  strongest scene changes are kept, each downscaled to at most ``_KEEP_SIDE`` pixels.
* Time is ``pts * time_base`` (so variable frame rate is sampled evenly in time, not in frame
  numbers).  Each returned image carries it as ``image.info["time_s"]`` (seconds since the
  first frame).
* Rotation: PyAV (18.x) exposes the display matrix only on decoded frames
  (``VideoFrame.rotation``), not on the stream; the probe reads it from the MP4/QuickTime track
  header (``tkhd`` x ``mvhd`` matrix, the source FFmpeg itself uses), else from a ``rotate``
  stream tag.  When decoding, the frame's display matrix wins when it has one.
"""

from __future__ import annotations

import io
import math
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import av
import av.error
import numpy as np
from av.container import InputContainer
from av.stream import Disposition
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image

from prism.errors import MediaError, PayloadTooLarge
from prism.media.sniff import sniff_format

__all__ = [
    "DEFAULT_VIDEO_LIMITS",
    "VideoInfo",
    "VideoLimits",
    "decode_video",
    "probe_video",
    "rotate_upright",
]


@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int = 50 * 2**20
    max_duration_s: float = 60.0
    max_width: int = 3840  # 4K UHD; 8K (7680x4320) is refused
    max_height: int = 3840
    max_pixels: int = 3840 * 2160
    max_frames: int = 3600  # declared or decoded frames
    sample_frames: int = 16  # frames returned at most
    decode_timeout_s: float = 10.0
    # Matched against the names of FFmpeg's demuxer ("mov,mp4,m4a,3gp,3g2,mj2" reads MP4 and
    # QuickTime alike, "matroska,webm" reads both): any one name allowed admits the demuxer.
    containers: frozenset[str] = frozenset({"mov", "mp4", "matroska", "webm"})
    # FFmpeg codec names (the codec id, not the decoder implementation: "av1" also when
    # libdav1d decodes it).
    codecs: frozenset[str] = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4"})

    def __post_init__(self) -> None:
        # A nonsensical limit is a bug in the caller's configuration, not bad input: fail loudly.
        for name in ("max_bytes", "max_width", "max_height", "max_pixels", "max_frames", "sample_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"VideoLimits.{name} must be at least 1")
        if not (self.max_duration_s > 0 and self.decode_timeout_s > 0):
            raise ValueError("VideoLimits.max_duration_s and decode_timeout_s must be positive")
        if not self.containers or not self.codecs:
            raise ValueError("VideoLimits.containers and codecs must not be empty")


DEFAULT_VIDEO_LIMITS = VideoLimits()


@dataclass(frozen=True)
class VideoInfo:
    container: str  # the allowed demuxer name that matched: "mov" for MP4/QuickTime, "matroska" ...
    codec: str  # FFmpeg codec name: "h264", "vp9" ...
    width: int  # as encoded (before rotation); see upright_size
    height: int
    duration_s: float  # declared; 0.0 if the container declares none
    fps: float  # average frame rate; 0.0 if unknown
    frames: int  # declared (0 if unknown)
    rotation: int  # degrees clockwise to display upright (0/90/180/270)
    has_audio: bool

    @property
    def upright_size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames once rotated upright."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height


# How much FFmpeg may read (bytes) / analyse (microseconds of media) to find the streams.  MP4
# and Matroska declare their streams in the header, so this only matters for odd files; it
# keeps FFmpeg from decoding far into a hostile file before we have checked anything.
_PROBESIZE = 5 * 2**20
_ANALYZE_US = 5_000_000
# Kept frames are downscaled so the longer side is at most this: enough for a 224 px encoder
# (and a thumbnail), and it bounds the memory of what we keep while decoding.
_KEEP_SIDE = 512
# Scene-change score: mean absolute difference (0..255) of 32x32 luma thumbnails of consecutive
# frames.  A cut between shots scores well above this; camera motion and compression noise stay
# well below it.
_THUMB = 32
_SCENE_MIN = 24.0
# Two scene changes closer than this are one (a flash, a dissolve): the stronger one is kept.
_SCENE_GAP_S = 0.25
# Pixel formats whose first plane is 8-bit luma: the scene thumbnail is read straight from it
# (a swscale call per frame to make a 32x32 grey image costs more than decoding a 720p frame).
_LUMA_FORMATS = frozenset(
    {
        "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p",
        "yuv411p", "yuv410p", "yuva420p", "yuva422p", "yuva444p", "nv12", "nv21", "nv16", "gray",
    }
)  # fmt: skip

# What PyAV raises for data it cannot parse or decode.  FFmpegError covers every libav error code
# (InvalidDataError, EOFError, ...); OSError/ValueError/EOFError are what PyAV itself raises for
# unusual states (e.g. a stream vanishing).  MemoryError is not caught: it is an outage, not
# the caller's fault.
_AV_ERRORS: tuple[type[Exception], ...] = (av.error.FFmpegError, OSError, ValueError, EOFError)

# The clock the deadline is measured on (a module attribute so tests can drive it).
_clock: Callable[[], float] = time.monotonic


# --------------------------------------------------------------------------------------------
# errors


def _error(message: str, code: str) -> MediaError:
    return MediaError(message, code=code)


def _timeout(limits: VideoLimits) -> MediaError:
    return _error(f"decoding the video took longer than {limits.decode_timeout_s:g} s", "video_timeout")


def _too_long(seconds: float, limits: VideoLimits, how: str) -> MediaError:
    return _error(f"the video {how} {seconds:.1f} s; the limit is {limits.max_duration_s:g} s", "video_too_long")


def _check_resolution(width: int, height: int, limits: VideoLimits, what: str) -> None:
    if width > limits.max_width or height > limits.max_height or width * height > limits.max_pixels:
        raise _error(
            f"the video {what} {width}x{height}; the limits are {limits.max_width}x{limits.max_height}"
            f" and {limits.max_pixels} pixels",
            "video_resolution",
        )


# The demuxer names of the formats sniff_format names that FFmpeg can read as videos here: such data
# refused by the whitelist is damaged when its demuxer is allowed, unsupported when it is not.
_DEMUXER_NAMES = {
    "MP4/QuickTime": frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2"}),
    "Matroska/WebM": frozenset({"matroska", "webm"}),
}


def _check_size(data: bytes, limits: VideoLimits) -> None:
    if len(data) == 0:
        raise _error("the video is empty (0 bytes)", "empty_video")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"the video is {len(data)} bytes; the limit is {limits.max_bytes} bytes", code="video_too_large"
        )


def _open_options(limits: VideoLimits) -> dict[str, str]:
    return {
        "format_whitelist": ",".join(sorted(limits.containers)),
        # No protocol is called "none": nested opens (data references, playlists) all fail.
        "protocol_whitelist": "none",
        "probesize": str(_PROBESIZE),
        "analyzeduration": str(_ANALYZE_US),
        # PyAV passes these options to the decoders avformat_find_stream_info opens as well: this
        # one keeps them from allocating a frame over the pixel limit while probing.
        "max_pixels": str(limits.max_pixels),
    }


@contextmanager
def _opened(data: bytes, limits: VideoLimits) -> Iterator[tuple[InputContainer, VideoStream, VideoInfo]]:
    """Open ``data`` and check its header; yields the open container, its video stream, info."""
    _check_size(data, limits)
    try:
        # PyAV's open timeout covers avformat_open_input and avformat_find_stream_info (it is
        # FFmpeg's interrupt callback); reads during decoding are bounded by our own deadline.
        timeout: Any = (limits.decode_timeout_s, None)  # the stub wants numbers.Real
        container = av.open(io.BytesIO(data), mode="r", options=_open_options(limits), timeout=timeout)
    except av.error.ExitError as exc:  # the interrupt callback fired: opening ran out of time
        raise _timeout(limits) from exc
    except av.error.ArgumentError as exc:
        # FFmpeg's best guess is a format whose demuxer is not on the whitelist.  When the magic
        # bytes name a format we know, say which; otherwise the guess was made on junk or damaged
        # data (a Matroska header with a flipped byte probes as raw H.263), i.e. invalid data.
        detected = sniff_format(data)
        if detected is not None and not _DEMUXER_NAMES.get(detected, frozenset()) & limits.containers:
            raise _unsupported_container(detected, limits) from exc
        allowed = ", ".join(sorted(limits.containers))
        message = f"cannot read the video: not a supported container ({allowed}) or damaged"
        raise _error(message, "invalid_video") from exc
    except _AV_ERRORS as exc:
        raise _error(f"cannot read the video: {_reason(exc)}", "invalid_video") from exc
    with container:
        try:
            stream, info = _inspect(container, data, limits)
        except _AV_ERRORS as exc:  # an attribute PyAV computes from malformed parameters
            raise _error(f"cannot read the video header: {_reason(exc)}", "invalid_video") from exc
        yield container, stream, info


def _reason(exc: Exception) -> str:
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _unsupported_container(detected: str, limits: VideoLimits) -> MediaError:
    allowed = ", ".join(sorted(limits.containers))
    return _error(f"{detected} is not a supported video container; allowed: {allowed}", "unsupported_container")


def _video_stream(container: InputContainer) -> VideoStream:
    if not container.streams:
        # e.g. an MP4 cut before its index (moov): the demuxer opens but finds nothing.
        raise _error("the file holds no streams (truncated or not a video)", "invalid_video")
    for stream in container.streams.video:
        # Cover art in MP4/Matroska is a one-picture "video" stream: not the video.
        if not stream.disposition & Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams})
    raise _error(f"the file has no video stream (only {', '.join(kinds)})", "no_video_stream")


def _inspect(container: InputContainer, data: bytes, limits: VideoLimits) -> tuple[VideoStream, VideoInfo]:
    names = container.format.name.split(",")
    allowed = [n for n in names if n in limits.containers]
    if not allowed:  # defensive: the demuxer whitelist should already have refused it
        raise _unsupported_container(container.format.long_name or container.format.name, limits)
    stream = _video_stream(container)

    ctx = stream.codec_context
    codec = ctx.codec.canonical_name if ctx is not None else "unknown"
    if codec not in limits.codecs:
        raise _error(
            f"unsupported video codec {codec}; allowed: {', '.join(sorted(limits.codecs))}", "unsupported_codec"
        )
    width, height = (ctx.width, ctx.height) if ctx is not None else (0, 0)
    if width <= 0 or height <= 0:
        raise _error(f"the video stream declares no valid frame size ({width}x{height})", "invalid_video")
    _check_resolution(width, height, limits, "is")

    duration_s = _declared_duration(container, stream)
    if duration_s > limits.max_duration_s:
        raise _too_long(duration_s, limits, "declares")
    frames = stream.frames if stream.frames > 0 else 0
    if frames > limits.max_frames:
        raise _error(f"the video declares {frames} frames; the limit is {limits.max_frames}", "too_many_frames")

    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate is not None and rate > 0 else 0.0
    info = VideoInfo(
        container=allowed[0],
        codec=codec,
        width=width,
        height=height,
        duration_s=duration_s,
        fps=fps,
        frames=frames,
        rotation=_header_rotation(data, container, stream),
        has_audio=bool(container.streams.audio),
    )
    return stream, info


def _declared_duration(container: InputContainer, stream: VideoStream) -> float:
    """The video stream's declared duration, else the container's; 0.0 when neither declares one."""
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base  # the container counts in AV_TIME_BASE units
    return 0.0


# --------------------------------------------------------------------------------------------
# rotation


def rotate_upright(image: Image.Image, rotation: int) -> Image.Image:
    """Rotate ``image`` ``rotation`` degrees clockwise (0/90/180/270): how it is displayed upright."""
    # PIL's ROTATE_* constants turn counter-clockwise.
    method = {
        90: Image.Transpose.ROTATE_270,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_90,
    }.get(rotation % 360)
    return image if method is None else image.transpose(method)


def _clockwise(degrees: float) -> int:
    """Nearest multiple of 90 in 0..270 of a clockwise angle (players only honour right angles)."""
    return int(round(degrees / 90.0)) % 4 * 90


def _frame_rotation(frame: VideoFrame) -> int:
    # VideoFrame.rotation is FFmpeg's av_display_rotation_get: counter-clockwise, -180..180, and 0
    # when the frame carries no display matrix.
    return _clockwise(-float(frame.rotation))


def _tag_rotation(metadata: Mapping[str, str]) -> int | None:
    """Clockwise degrees from a legacy ``rotate`` stream tag (older FFmpeg exported it)."""
    value = metadata.get("rotate")
    if value is None:
        return None
    try:
        degrees = float(value)
    except ValueError:
        return None
    return _clockwise(degrees) if math.isfinite(degrees) else None


def _header_rotation(data: bytes, container: InputContainer, stream: VideoStream) -> int:
    rotation = None
    if "mov" in container.format.name.split(","):
        try:
            rotation = _mp4_rotation(data, stream.index)
        except struct.error:  # defensive: every read is bounds-checked first
            rotation = None
    if rotation is None:
        rotation = _tag_rotation(stream.metadata)
    return rotation or 0


_MAX_BOXES = 10_000  # boxes visited while looking for the track headers (hostile files nest a lot)


def _boxes(data: bytes, start: int, end: int, budget: list[int]) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, box end)`` of the ISO-BMFF boxes in ``data[start:end]``."""
    pos = start
    while pos + 8 <= end and budget[0] > 0:
        budget[0] -= 1
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:  # 64-bit size follows the type
            if pos + 16 > end:
                return
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:  # the box runs to the end of its parent
            size = end - pos
        if size < header or pos + size > end:
            return  # malformed or truncated: stop rather than guess
        yield kind, pos + header, pos + size
        pos += size


def _find(data: bytes, start: int, end: int, kind: bytes, budget: list[int]) -> tuple[int, int] | None:
    for k, s, e in _boxes(data, start, end, budget):
        if k == kind:
            return s, e
    return None


def _matrix(data: bytes, start: int, end: int, offsets: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``(a, b, c, d)`` (16.16 fixed point) of the matrix in a full box (mvhd/tkhd) version 0/1."""
    if start >= end:
        return None
    offset = offsets[0] if data[start] == 0 else offsets[1]
    if start + offset + 36 > end:
        return None
    m = struct.unpack_from(">9i", data, start + offset)
    return m[0], m[1], m[3], m[4]


def _handler(data: bytes, trak: tuple[int, int], budget: list[int]) -> bytes | None:
    """The handler type of a ``trak`` (``b"vide"`` for video), from ``mdia/hdlr``."""
    mdia = _find(data, trak[0], trak[1], b"mdia", budget)
    hdlr = _find(data, mdia[0], mdia[1], b"hdlr", budget) if mdia is not None else None
    if hdlr is None or hdlr[0] + 12 > hdlr[1]:
        return None
    return data[hdlr[0] + 8 : hdlr[0] + 12]  # after version/flags and pre_defined


def _mp4_rotation(data: bytes, track_index: int) -> int | None:
    """Clockwise rotation of a track from the MP4/QuickTime header, None when it cannot be read.

    FFmpeg builds the display matrix as ``tkhd matrix x mvhd matrix``; its rotation is
    ``atan2(b, a)`` clockwise.  FFmpeg makes one stream per ``trak``, in order, so the stream
    index is the track's position.
    """
    budget = [_MAX_BOXES]
    moov = _find(data, 0, len(data), b"moov", budget)
    if moov is None:
        return None
    movie = (65536, 0, 0, 65536)
    traks: list[tuple[int, int]] = []
    for kind, s, e in _boxes(data, moov[0], moov[1], budget):
        if kind == b"mvhd":
            movie = _matrix(data, s, e, (36, 48)) or movie
        elif kind == b"trak":
            traks.append((s, e))
    if track_index >= len(traks):
        return None
    trak = traks[track_index]
    if _handler(data, trak, budget) != b"vide":
        return None  # the tracks do not line up with FFmpeg's streams: do not guess
    tkhd = _find(data, trak[0], trak[1], b"tkhd", budget)
    if tkhd is None:
        return None
    track = _matrix(data, tkhd[0], tkhd[1], (40, 52))
    if track is None:
        return None
    a, b, c, _d = track
    ma, mb, mc, md = movie
    ra, rb = a * ma + b * mc, a * mb + b * md  # first row of the 2x2 product
    if ra == 0 and rb == 0:
        return None
    return _clockwise(math.degrees(math.atan2(rb, ra)))


# --------------------------------------------------------------------------------------------
# sampling


@dataclass
class _Kept:
    index: int  # decode order
    time_s: float  # since the first frame
    image: Image.Image  # RGB, longer side <= _KEEP_SIDE, not yet rotated


@dataclass
class _Sampler:
    """Keeps, in bounded memory, the frames the final sample is chosen from.

    * ``grid``: the first frame in each ``step``-second cell of a time grid.  When more than
      ``2 * budget`` cells are filled, the step doubles and every other cell is dropped, so the
      kept frames stay spread evenly over however long the clip turns out to be.
    * ``scenes``: the strongest scene changes (at most ``budget // 2``), one per
      ``_SCENE_GAP_S``.
    """

    budget: int
    step: float
    grid: list[_Kept] = field(default_factory=list)
    scenes: list[tuple[float, _Kept]] = field(default_factory=list)
    last: tuple[int, float, VideoFrame] | None = None
    _cells: set[int] = field(default_factory=set)
    _thumb: np.ndarray[Any, np.dtype[np.float32]] | None = None

    def add(self, index: int, time_s: float, frame: VideoFrame) -> None:
        cached: list[_Kept] = []  # convert a frame at most once, and only when it is kept

        def kept() -> _Kept:
            if not cached:
                cached.append(_Kept(index, time_s, _small_rgb(frame)))
            return cached[0]

        cell = math.floor(time_s / self.step) if time_s >= 0 else -1
        if cell not in self._cells:
            self._cells.add(cell)
            self.grid.append(kept())
            if len(self.grid) > 2 * self.budget:
                self._coarsen()

        thumb = _thumbnail(frame)
        if self._thumb is not None and self._thumb.shape == thumb.shape:
            score = float(np.abs(thumb - self._thumb).mean())
            if score >= _SCENE_MIN:
                self._scene(score, time_s, kept)
        self._thumb = thumb
        self.last = (index, time_s, frame)

    def _coarsen(self) -> None:
        self.step *= 2
        grid: list[_Kept] = []
        self._cells = set()
        for k in self.grid:
            cell = math.floor(k.time_s / self.step) if k.time_s >= 0 else -1
            if cell not in self._cells:
                self._cells.add(cell)
                grid.append(k)
        self.grid = grid

    def _scene(self, score: float, time_s: float, kept: Callable[[], _Kept]) -> None:
        capacity = self.budget // 2
        if capacity == 0:
            return
        # Frames arrive in time order, so only the latest scene change can be too close.
        if self.scenes and time_s - self.scenes[-1][1].time_s < _SCENE_GAP_S:
            if score <= self.scenes[-1][0]:
                return
            self.scenes.pop()
        if len(self.scenes) >= capacity:
            weakest = min(range(len(self.scenes)), key=lambda i: self.scenes[i][0])
            if score <= self.scenes[weakest][0]:
                return
            del self.scenes[weakest]
        self.scenes.append((score, kept()))

    def choose(self) -> list[_Kept]:
        """Up to ``budget`` frames in time order: the scene changes, the rest spread evenly."""
        pool = list(self.grid)
        if self.last is not None and (not pool or pool[-1].index != self.last[0]):
            index, time_s, frame = self.last
            pool.append(_Kept(index, time_s, _small_rgb(frame)))  # the end of the clip
        chosen = {k.index: k for _score, k in self.scenes}
        rest = [k for k in pool if k.index not in chosen]
        for k in _spread(rest, self.budget - len(chosen)):
            chosen[k.index] = k
        return sorted(chosen.values(), key=lambda k: (k.time_s, k.index))


def _spread(items: list[_Kept], n: int) -> list[_Kept]:
    """``n`` of ``items`` (in time order) nearest to ``n`` times spread evenly from the first to the last.

    By time, not by position in the list: the kept grid has holes where a variable frame rate
    left cells empty.  With ``n == 1`` the middle of the clip.
    """
    if n <= 0 or not items:
        return []
    if n >= len(items):
        return items
    start, end = items[0].time_s, items[-1].time_s
    targets = [(start + end) / 2] if n == 1 else [start + (end - start) * i / (n - 1) for i in range(n)]
    free = list(items)
    chosen = []
    for target in targets:  # n <= budget and len(items) <= 2 * budget + 1: quadratic is nothing
        best = min(free, key=lambda k: abs(k.time_s - target))
        free.remove(best)
        chosen.append(best)
    return sorted(chosen, key=lambda k: (k.time_s, k.index))


def _thumbnail(frame: VideoFrame) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A 32x32 float luma thumbnail of ``frame`` for the scene-change score."""
    plane = frame.planes[0]
    width, height, stride = plane.width, plane.height, plane.line_size
    if frame.format.name in _LUMA_FORMATS and plane.buffer_size >= stride * height and width > 0 and height > 0:
        luma = np.frombuffer(memoryview(plane), dtype=np.uint8, count=stride * height).reshape(height, stride)
        # Sample a 64x64 grid of the visible area and average 2x2 blocks: cheap and smooth enough.
        ys = (np.arange(2 * _THUMB) * height) // (2 * _THUMB)
        xs = (np.arange(2 * _THUMB) * width) // (2 * _THUMB)
        grid = luma[np.ix_(ys, xs)].astype(np.float32)
        return np.asarray(grid.reshape(_THUMB, 2, _THUMB, 2).mean(axis=(1, 3)), dtype=np.float32)
    grey = frame.reformat(width=_THUMB, height=_THUMB, format="gray", interpolation="AREA").to_ndarray()
    return np.asarray(grey, dtype=np.float32)


def _small_rgb(frame: VideoFrame) -> Image.Image:
    """``frame`` as an RGB image whose longer side is at most ``_KEEP_SIDE`` (aspect kept)."""
    width, height = frame.width, frame.height
    scale = min(1.0, _KEEP_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    rgb = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
    # to_ndarray drops the row padding; a fresh array, so the image owns its pixels.
    return Image.fromarray(np.asarray(rgb.to_ndarray(), dtype=np.uint8))


def _decode(
    container: InputContainer, stream: VideoStream, info: VideoInfo, limits: VideoLimits, deadline: float
) -> tuple[list[_Kept], int]:
    """One pass over the video stream; returns the chosen frames and the rotation to apply."""
    ctx = stream.codec_context
    ctx.thread_type = "AUTO"  # frame threads: ~1.5x faster on long clips, same frames
    # FFmpeg refuses to allocate a frame over this (the header may understate the size).
    ctx.options = {**ctx.options, "max_pixels": str(limits.max_pixels)}

    # Grid step: 2 * budget cells over the declared duration (twice what is returned, so the
    # even spread has frames near its targets); an unknown duration starts fine and coarsens as
    # the clip grows.
    step = info.duration_s / (2 * limits.sample_frames) if info.duration_s > 0 else 0.1
    sampler = _Sampler(budget=limits.sample_frames, step=max(step, 1e-3))
    rotation: int | None = None
    first: float | None = None
    previous = 0.0
    count = 0
    frame_period = 1.0 / info.fps if info.fps > 0 else 0.04

    for packet in container.demux(stream):
        if _clock() > deadline:
            raise _timeout(limits)
        for frame in packet.decode():
            if _clock() > deadline:
                raise _timeout(limits)
            count += 1
            if count > limits.max_frames:
                raise _error(f"the video has more than {limits.max_frames} frames", "too_many_frames")
            _check_resolution(frame.width, frame.height, limits, "has frames of")
            pts_time = frame.time
            # A frame without a timestamp is placed one frame period after the previous one.
            t = float(pts_time) if pts_time is not None else previous + frame_period
            if first is None:
                first = t
                rotation = _frame_rotation(frame) or info.rotation
            t -= first
            if t > limits.max_duration_s:
                raise _too_long(t, limits, "runs past")
            previous = t + first
            sampler.add(count - 1, t, frame)

    if count == 0:
        raise _error("the video stream has no decodable frame", "no_frames")
    return sampler.choose(), rotation or 0


# --------------------------------------------------------------------------------------------
# public API


def probe_video(data: bytes, limits: VideoLimits = DEFAULT_VIDEO_LIMITS) -> VideoInfo:
    """Checks everything knowable from the container header BEFORE decoding any pixel.

    (FFmpeg may decode a frame or two of an odd file to learn its stream parameters; that is
    bounded by the probe size, ``max_pixels`` and the timeout.)  Returns what the header
    declares; ``rotation`` is read from the MP4/QuickTime track header or a ``rotate`` tag.
    """
    with _opened(data, limits) as (_container, _stream, info):
        return info


def decode_video(data: bytes, limits: VideoLimits = DEFAULT_VIDEO_LIMITS) -> tuple[VideoInfo, list[Image.Image]]:
    """probe, then ONE decoding pass with a wall-clock limit; returns up to limits.sample_frames RGB frames,
    upright (rotation applied), in time order.

    The frames are about half spread evenly in time and half the strongest scene changes (when the
    clip has any; otherwise all are spread evenly), downscaled so the longer side is at most 512 px.
    Each image's ``info["time_s"]`` is its time in seconds since the first frame.  The returned
    ``VideoInfo.rotation`` is the one applied (the decoded frames' display matrix when they carry one).
    """
    deadline = _clock() + limits.decode_timeout_s
    with _opened(data, limits) as (container, stream, info):
        try:
            kept, rotation = _decode(container, stream, info, limits, deadline)
        except av.error.ExitError as exc:
            raise _timeout(limits) from exc
        except _AV_ERRORS as exc:
            ctx = stream.codec_context
            if ctx is not None and ctx.width > 0 and ctx.height > 0:
                # The decoder refuses a frame over max_pixels with a generic error: name it.
                _check_resolution(ctx.width, ctx.height, limits, "has frames of")
            raise _error(f"corrupt video data: {_reason(exc)}", "invalid_video") from exc
    images = []
    for k in kept:
        image = rotate_upright(k.image, rotation)
        image.info = {"time_s": k.time_s}
        images.append(image)
    return replace(info, rotation=rotation), images
