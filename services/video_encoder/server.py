"""gRPC video encoder: decodes untrusted clips safely (limits before any pixel, a time limit while
decoding), samples frames, encodes them in one batch with the image network and pools them over time.

The clip's vector has the image encoder's shape (views x 1280), so a video query is matched against
product photos like a photo query, and (with trained heads) a shared-space vector comparable to text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from prism import tracing
from prism.encoding import Backend, EncoderLimits, EncoderServicer, RawItem, encoder_grpc_service
from prism.grpc_server import GrpcService
from prism.media.video import VideoLimits, decode_video
from prism.settings import CommonSettings
from prism.storage import FolderStore
from prism.vector_cache import VectorCache

from . import model
from .settings import Settings

SERVICE_NAME = "video-encoder"


@dataclass(frozen=True)
class Clip:
    frames: list[Image.Image]


def limits_of(settings: Settings) -> VideoLimits:
    return VideoLimits(
        max_bytes=settings.max_video_bytes,
        max_duration_s=settings.max_duration_s,
        max_width=settings.max_width,
        max_height=settings.max_height,
        max_frames=settings.max_frames,
        sample_frames=settings.sample_frames,
        decode_timeout_s=settings.decode_timeout_s,
    )


def _warm_clip() -> bytes:
    """A tiny real H.264 clip, so warm-up runs the decoder too."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 30 * i, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def make_backend(models: model.VideoModels, settings: Settings) -> Backend[Clip]:
    from prism.models.temporal import pool_clips, pool_id

    limits = limits_of(settings)
    views = tuple(settings.views)

    def prepare(item: RawItem) -> Clip:
        with tracing.span("decode", bytes=len(item.data or b""), modality="video"):
            _info, frames = decode_video(item.data or b"", limits)
        return Clip(frames)

    def encode_frames(clips: list[Clip]) -> list[np.ndarray]:
        flat = [f for c in clips for f in c.frames]
        feats = models.image.embed_views(flat, views) if views else models.image.embed(flat)[:, None, :]
        out, start = [], 0
        for c in clips:
            out.append(np.asarray(feats[start : start + len(c.frames)], dtype=np.float32))
            start += len(c.frames)
        return out

    def run(clips: list[Clip]) -> np.ndarray:
        pooled = pool_clips(models.pool, encode_frames(clips))
        return pooled if views else pooled[:, 0, :]

    shared = None
    heads = models.heads
    if heads is not None:
        from prism.training.heads import colour_features, head_input, project_image

        def shared(clips: list[Clip], native: np.ndarray) -> np.ndarray:
            # the clip's colour: the mean over its frames (the head was trained on one photo's)
            colour = np.stack([np.mean([colour_features(f) for f in c.frames], axis=0) for c in clips])
            return project_image(heads, head_input(native, colour, heads.config, views or ("center",)))

    return Backend(
        model_id=f"{models.image.model_id}+{pool_id(models.pool)}",
        dim=models.image.dim,
        device=str(models.image.device),
        prepare=prepare,
        run=run,
        warmup_items=(RawItem(kind="media", data=_warm_clip()),),
        views=len(views),
        shared=shared,
        shared_dim=heads.config.out_dim if heads is not None else 0,
        shared_id=heads.content_id if heads is not None else "",
    )


def build_service(settings: Settings, common: CommonSettings) -> tuple[GrpcService, EncoderServicer[Clip]]:
    cache = VectorCache(common.cache_dir / "vectors.sqlite") if settings.cache_vectors else None
    store = FolderStore(Path(settings.store_dir)) if settings.store_dir else None
    servicer: EncoderServicer[Clip] = EncoderServicer(
        service=SERVICE_NAME,
        modality="video",
        load_backend=lambda: make_backend(model.load(settings, common), settings),
        max_batch=settings.max_batch,
        max_wait_s=settings.batch_wait_ms / 1000.0,
        cache=cache,
        store=store,
        limits=EncoderLimits(max_media_bytes=settings.max_video_bytes),
    )
    return encoder_grpc_service(servicer, settings), servicer
