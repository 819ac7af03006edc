"""Safe probing and frame sampling of untrusted videos: prism.media.video (clips made in memory)."""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
import pytest
from av.video.stream import VideoStream
from PIL import Image

import prism.media.video as video
from prism.errors import InvalidInput
from prism.media.video import VideoInfo, VideoLimits, decode_video, probe_video, rotate_upright

pytestmark = pytest.mark.unit

W, H = 64, 48
RATE = 24


# ---------------------------------------------------------------------------------------------
# helpers


def bar_frames(n: int, *, cut: int | None = None, width: int = W, height: int = H) -> list[np.ndarray]:
    """Frame i: a white vertical bar at x = i on a dark background (bright from frame ``cut`` on).

    The bar's position tells which frame a decoded image came from; the background flip is an
    abrupt scene change.
    """
    frames = []
    for i in range(n):
        level = 150 if cut is not None and i >= cut else 20
        a = np.full((height, width, 3), level, np.uint8)
        x = i % (width - 4)
        a[:, x : x + 4] = 255
        frames.append(a)
    return frames


def bar_position(im: Image.Image) -> int:
    """x of the bar's left edge (the centre of the bright columns, less half the bar's width)."""
    cols = np.asarray(im.convert("L"), dtype=np.float64).mean(axis=0)
    bright = np.flatnonzero(cols > (cols.max() + cols.min()) / 2)
    return round(float(bright.mean()) - 1.5)


def make_clip(
    frames: Sequence[np.ndarray],
    *,
    fmt: str = "mp4",
    codec: str = "libx264",
    pts: Sequence[int] | None = None,
    audio: bool = False,
    video_stream: bool = True,
    rotation: float | None = None,
    codec_options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> bytes:
    """Encode ``frames`` (RGB arrays, time base 1/RATE) in memory; optional AAC track, rotation."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt, options=container_options or {}) as out:
        stream: VideoStream | None = None
        if video_stream:
            height, width = frames[0].shape[:2] if frames else (H, W)
            stream = cast(VideoStream, out.add_stream(codec, rate=RATE, options=codec_options or {}))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.gop_size = 4  # short GOPs: quick to decode anywhere
            if rotation is not None:
                stream.set_display_rotation(rotation)  # PyAV: counter-clockwise degrees
        sound = out.add_stream("aac", rate=16000) if audio else None
        if stream is not None:
            for i, a in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(a, format="rgb24")
                if pts is not None:
                    frame.pts, frame.time_base = pts[i], Fraction(1, RATE)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        out.start_encoding()  # writes the header even when nothing was muxed (no-op otherwise)
        if sound is not None:
            for k in range(8):
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, k * 1024
                for packet in sound.encode(chunk):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return buf.getvalue()


def refusal(data: bytes, limits: VideoLimits | None = None, *, probe: bool = False) -> str:
    """The code of the refusal of ``data`` (only InvalidInput may escape)."""
    fn = probe_video if probe else decode_video
    with pytest.raises(InvalidInput) as info:
        fn(data) if limits is None else fn(data, limits)
    code: str = info.value.code
    return code


def times(images: list[Image.Image]) -> list[float]:
    return [float(im.info["time_s"]) for im in images]


@pytest.fixture(scope="module")
def clip48() -> bytes:
    """48 frames, 64x48, 24 fps H.264 in MP4, a bar moving right (2 s)."""
    return make_clip(bar_frames(48))


# ---------------------------------------------------------------------------------------------
# good clips


def test_probe_normal_mp4(clip48: bytes) -> None:
    info = probe_video(clip48)
    assert info.duration_s == pytest.approx(2.0, abs=0.05) and info.fps == pytest.approx(24.0)
    assert replace(info, duration_s=0.0, fps=0.0) == VideoInfo(
        container="mov",
        codec="h264",
        width=W,
        height=H,
        duration_s=0.0,
        fps=0.0,
        frames=48,
        rotation=0,
        has_audio=False,
    )
    assert info.upright_size == (W, H)


def test_decode_samples_evenly_in_time_order(clip48: bytes) -> None:
    info, images = decode_video(clip48)
    assert info == probe_video(clip48)
    assert 8 <= len(images) <= 16
    assert all(im.mode == "RGB" and im.size == (W, H) for im in images)
    ts = times(images)
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert ts[0] == 0.0 and ts[-1] >= 46 / RATE  # the first and the last frames are covered
    assert max(b - a for a, b in itertools.pairwise(ts)) <= 0.25  # no big hole
    positions = [bar_position(im) for im in images]
    assert positions == sorted(positions)  # the pixels agree with the timestamps
    for im, t in zip(images, ts, strict=True):
        assert abs(bar_position(im) - round(t * RATE)) <= 1


def test_budget_is_respected_on_a_longer_clip() -> None:
    data = make_clip(bar_frames(120), codec_options={"preset": "ultrafast"})  # 5 s
    _info, images = decode_video(data, VideoLimits(sample_frames=5))
    assert len(images) == 5
    ts = times(images)
    assert ts[0] == 0.0 and ts[-1] >= 119 / RATE and ts == sorted(ts)


def test_scene_change_is_sampled() -> None:
    # The cut at frame 31 is off the uniform grid: only the scene-change pick can land on it.
    data = make_clip(bar_frames(48, cut=31))
    _info, images = decode_video(data, VideoLimits(sample_frames=4))
    ts = times(images)
    assert len(images) == 4 and ts == sorted(ts)
    assert any(abs(t - 31 / RATE) < 0.5 / RATE for t in ts), ts
    after = [im for im, t in zip(images, ts, strict=True) if abs(t - 31 / RATE) < 0.5 / RATE][0]
    assert np.asarray(after.convert("L")).min() > 100  # the bright new scene, not the old one
    assert ts[0] == 0.0 and ts[-1] >= 46 / RATE  # the uniform half still covers both ends


def test_without_scene_changes_the_whole_budget_is_uniform(clip48: bytes) -> None:
    _info, images = decode_video(clip48, VideoLimits(sample_frames=4))
    ts = times(images)
    assert len(ts) == 4 and ts[0] == 0.0 and ts[-1] >= 46 / RATE
    assert all(0.4 < b - a < 0.9 for a, b in itertools.pairwise(ts)), ts


def test_variable_frame_rate_with_audio_track() -> None:
    pts = [0, 1, 2, 5, 6, 7, 15, 16, 17, 18, 30, 31, 40, 41, 42, 47]
    data = make_clip(bar_frames(len(pts)), pts=pts, audio=True)
    info, images = decode_video(data, VideoLimits(sample_frames=6))
    assert info.has_audio and info.codec == "h264"
    ts = times(images)
    assert 1 <= len(images) <= 6 and ts == sorted(ts)
    assert {round(t * RATE) for t in ts} <= set(pts)  # real frame times, not frame numbers
    assert ts[0] == 0.0 and round(ts[-1] * RATE) == 47
    for im, t in zip(images, ts, strict=True):
        assert bar_position(im) == pytest.approx(pts.index(round(t * RATE)), abs=1)


@pytest.mark.parametrize(
    ("fmt", "codec", "size", "options"),
    [
        ("mp4", "mpeg4", (63, 47), {}),
        ("webm", "libvpx-vp9", (63, 47), {"deadline": "realtime", "cpu-used": "8"}),
        ("matroska", "libx264", (66, 50), {"preset": "ultrafast"}),
    ],
)
def test_odd_sizes_decode(fmt: str, codec: str, size: tuple[int, int], options: dict[str, str]) -> None:
    data = make_clip(bar_frames(6, width=size[0], height=size[1]), fmt=fmt, codec=codec, codec_options=options)
    info, images = decode_video(data)
    assert (info.width, info.height) == size
    assert 1 <= len(images) <= 6 and all(im.size == size and im.mode == "RGB" for im in images)


@pytest.mark.parametrize(("ccw", "clockwise"), [(90, 270), (-90, 90), (180, 180)])
def test_rotation_from_display_matrix(ccw: int, clockwise: int) -> None:
    frames = bar_frames(4)
    for a in frames:
        a[:6, :6] = (255, 0, 0)  # a red marker in the encoded top-left corner
    data = make_clip(frames, rotation=ccw)
    assert probe_video(data).rotation == clockwise  # read from the MP4 track header
    info, images = decode_video(data)
    assert info.rotation == clockwise
    expected = (H, W) if clockwise in (90, 270) else (W, H)
    assert info.upright_size == expected and all(im.size == expected for im in images)
    # Where the encoded top-left corner is once upright (clockwise quarter turns).
    corner = {90: (expected[0] - 3, 3), 180: (expected[0] - 3, expected[1] - 3), 270: (3, expected[1] - 3)}
    r, g, b = cast(tuple[int, int, int], images[0].getpixel(corner[clockwise]))
    assert r > 150 and g < 100 and b < 100


def test_rotate_upright_and_rotate_tag() -> None:
    # FFmpeg's MP4 muxer no longer writes a "rotate" tag (only the display matrix), so the tag
    # fallback is tested on the parser and the rotation helper on a synthetic image.
    im = Image.new("RGB", (4, 2), (0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0))
    assert rotate_upright(im, 0) is im
    assert rotate_upright(im, 90).size == (2, 4) and rotate_upright(im, 90).getpixel((1, 0)) == (255, 0, 0)
    assert rotate_upright(im, 180).getpixel((3, 1)) == (255, 0, 0)
    assert rotate_upright(im, 270).getpixel((0, 3)) == (255, 0, 0)
    assert video._tag_rotation({"rotate": "90"}) == 90
    assert video._tag_rotation({"rotate": "-90"}) == 270
    assert video._tag_rotation({"rotate": "x"}) is None and video._tag_rotation({}) is None


# ---------------------------------------------------------------------------------------------
# refusals


def test_empty_and_too_large(clip48: bytes) -> None:
    assert refusal(b"") == "empty_video"
    assert refusal(clip48, VideoLimits(max_bytes=100)) == "video_too_large"
    assert refusal(clip48, VideoLimits(max_bytes=100), probe=True) == "video_too_large"


def test_truncated_mp4(clip48: bytes) -> None:
    half = len(clip48) // 2
    assert refusal(clip48[:half]) == "invalid_video"  # the index (moov) is at the end: gone
    assert refusal(clip48[half:]) == "invalid_video"  # no header at all


def test_text_named_mp4(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_text("this is not a video\n" * 40)
    assert refusal(path.read_bytes()) == "invalid_video"


def test_gif_is_not_a_video_container() -> None:
    buf = io.BytesIO()
    frames = [Image.new("RGB", (16, 16), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert refusal(buf.getvalue()) == "unsupported_container"
    assert refusal(buf.getvalue(), probe=True) == "unsupported_container"


def test_container_and_codec_limits(clip48: bytes) -> None:
    assert refusal(clip48, VideoLimits(containers=frozenset({"matroska"}))) == "unsupported_container"
    assert refusal(clip48, VideoLimits(codecs=frozenset({"vp9"})), probe=True) == "unsupported_codec"


def test_audio_only_has_no_video_stream() -> None:
    data = make_clip([], video_stream=False, audio=True)
    assert refusal(data, probe=True) == "no_video_stream"
    assert refusal(data) == "no_video_stream"


def test_header_claiming_ten_hours() -> None:
    data = make_clip(bar_frames(2), pts=[0, 10 * 3600 * RATE])
    assert refusal(data, probe=True) == "video_too_long"


def test_8k_resolution() -> None:
    data = make_clip(
        [np.zeros((4320, 7680, 3), np.uint8)], codec_options={"preset": "ultrafast", "tune": "zerolatency"}
    )
    assert refusal(data, probe=True) == "video_resolution"
    assert refusal(data, VideoLimits(max_width=8000, max_height=8000, max_pixels=1000)) == "video_resolution"


def test_too_many_declared_frames(clip48: bytes) -> None:
    assert refusal(clip48, VideoLimits(max_frames=10), probe=True) == "too_many_frames"


def test_zero_frames() -> None:
    # A video stream with no packet at all: FFmpeg cannot even find its parameters.
    assert refusal(make_clip([], video_stream=True)) in {"no_frames", "invalid_video"}


def test_no_decodable_frame() -> None:
    # Only the non-key frames of a clip: the stream opens fine but nothing decodes.
    src = make_clip(bar_frames(8))
    out = io.BytesIO()
    with av.open(io.BytesIO(src), "r") as inp, av.open(out, "w", format="mp4") as dst:
        ist = inp.streams.video[0]
        ost = dst.add_stream_from_template(ist)
        for packet in inp.demux(ist):
            if packet.dts is not None and not packet.is_keyframe:
                packet.stream = ost
                dst.mux(packet)
    assert probe_video(out.getvalue()).codec == "h264"
    assert refusal(out.getvalue()) == "no_frames"


def live_mkv(n: int) -> bytes:
    """Matroska written as a live stream: no duration, no frame count, no index."""
    return make_clip(bar_frames(n), fmt="matroska", container_options={"live": "1"})


def test_endless_stream_is_bounded_by_pts() -> None:
    data = live_mkv(48)  # 2 s that the header does not announce
    info = probe_video(data, VideoLimits(max_duration_s=1.0))
    assert info.duration_s == 0.0 and info.frames == 0
    assert refusal(data, VideoLimits(max_duration_s=1.0)) == "video_too_long"
    _info, images = decode_video(data, VideoLimits(sample_frames=6))  # within limits it decodes
    ts = times(images)
    assert len(images) == 6 and ts[0] == 0.0 and ts[-1] >= 46 / RATE and ts == sorted(ts)


def test_too_many_decoded_frames() -> None:
    assert refusal(live_mkv(24), VideoLimits(max_frames=10)) == "too_many_frames"


def test_timeout(clip48: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert refusal(clip48, VideoLimits(decode_timeout_s=1e-6)) == "video_timeout"

    # The decoding loop's own deadline, independent of how fast this machine is: a clock that
    # advances one second per reading passes the deadline a few frames in.
    ticks: Iterator[float] = itertools.count(0.0, 1.0)
    monkeypatch.setattr(video, "_clock", lambda: next(ticks))
    assert refusal(clip48, VideoLimits(decode_timeout_s=5.0)) == "video_timeout"


def test_damaged_bytes_never_escape_as_other_errors(clip48: bytes) -> None:
    rng = np.random.default_rng(7)
    variants = [clip48[:cut] for cut in (8, 40, 200, len(clip48) - 200, len(clip48) - 8)]
    for _ in range(12):
        damaged = bytearray(clip48)
        for pos in rng.integers(0, len(damaged), size=8):
            damaged[pos] ^= 0xFF
        variants.append(bytes(damaged))
    for data in variants:
        try:
            _info, images = decode_video(data)
        except InvalidInput:
            continue
        assert all(im.mode == "RGB" for im in images)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        VideoLimits(sample_frames=0)
    with pytest.raises(ValueError):
        VideoLimits(max_duration_s=0)


# ---------------------------------------------------------------------------------------------
# real videos


VIDEO_DIR = Path(os.environ.get("PRISM_DATA_DIR", "/work/shared/data")) / "videos"


@pytest.mark.parametrize("name", ["reel-a.mp4", "reel-b.mp4"])
def test_real_reels(name: str) -> None:
    path = VIDEO_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} is not present (set PRISM_DATA_DIR to the data folder)")
    data = path.read_bytes()
    probed = probe_video(data)
    info, images = decode_video(data)
    assert info == probed
    assert info.codec == "h264" and info.has_audio and 9.0 < info.duration_s < 15.5
    assert 1 <= len(images) <= 16
    width, height = info.upright_size
    scale = 512 / max(width, height)
    assert all(im.size == (round(width * scale), round(height * scale)) for im in images)
    assert times(images) == sorted(times(images))
