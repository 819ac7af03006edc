"""``make bench``: throughput and latency measured side by side in one run (the machine is noisy).

1. Encoder throughput: the bare model in-process vs the same model through its gRPC service
   (vector cache off), as a ratio: what the service layer costs.
2. Video encoder: clips/s and frames/s against the image encoder's frames/s on the same frames.
3. Gateway search latency (HTTP, end to end) at 10k indexed products.
4. Encoder precision: each encoder (text, image, video) in fp32 against each CPU option (bf16,
   int8) in-process, rounds interleaved, as speed-up ratios, with each option's cosine to fp32.
Prints a table and writes JSON under ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from prism.catalog import Catalog
from prism.logs import setup_logging
from prism.models.precision import Precision
from prism.settings import CommonSettings
from prism.vectors import cosine_agreement

if TYPE_CHECKING:
    from prism.encoding import Backend

T = TypeVar("T")


def _rate(n: int, fn: Callable[[], object], repeat: int = 2) -> float:
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def bench_encoders(common: CommonSettings, catalog: Catalog, n_images: int, n_texts: int) -> dict[str, Any]:
    from prism.encoding import EncoderClient
    from prism.media.images import decode_image
    from services.image_encoder.server import build_service as build_image
    from services.image_encoder.settings import Settings as ImageSettings
    from services.text_encoder.server import build_service as build_text
    from services.text_encoder.settings import Settings as TextSettings

    products = [p for p in catalog.products() if p.images][: max(n_images, n_texts)]
    blobs = [catalog.media_path(p.images[0]).read_bytes() for p in products[:n_images]]
    texts = [p.text() for p in products[:n_texts]]
    out: dict[str, Any] = {}

    img_service, img_servicer = build_image(ImageSettings(port=0, metrics_port=0, cache_vectors=False), common)
    txt_service, txt_servicer = build_text(TextSettings(port=0, metrics_port=0, cache_vectors=False), common)
    for s in (img_service, txt_service):
        s.start()
        s.warm()
    try:
        img_model = img_servicer.backend
        txt_model = txt_servicer.backend
        img_client = EncoderClient(img_service.address, timeout_s=300)
        txt_client = EncoderClient(txt_service.address, timeout_s=300)
        batch = 32

        def bare_images() -> None:
            for i in range(0, len(blobs), batch):
                img_model.run([decode_image(b) for b in blobs[i : i + batch]])

        def grpc_images() -> None:
            for i in range(0, len(blobs), batch):
                img_client.embed_media(blobs[i : i + batch])

        def grpc_images_concurrent() -> None:
            # 4 callers sending 8 images each: server-side batching should keep the model fed.
            chunks = [blobs[i : i + 8] for i in range(0, len(blobs), 8)]
            lock = threading.Lock()

            def worker() -> None:
                while True:
                    with lock:
                        if not chunks:
                            return
                        c = chunks.pop()
                    img_client.embed_media(c)

            threads = [threading.Thread(target=worker) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        def bare_texts() -> None:
            for i in range(0, len(texts), 64):
                txt_model.run([("passage", t) for t in texts[i : i + 64]])

        def grpc_texts() -> None:
            for i in range(0, len(texts), 64):
                txt_client.embed_texts(texts[i : i + 64], kind="passage")

        # Interleave bare and service runs so both see the same machine load.
        bi, gi, gc = (
            _rate(len(blobs), bare_images),
            _rate(len(blobs), grpc_images),
            _rate(len(blobs), grpc_images_concurrent),
        )
        bt, gt = _rate(len(texts), bare_texts), _rate(len(texts), grpc_texts)
        out["image"] = {
            "model": img_model.model_id,
            "n": len(blobs),
            "bare_per_s": bi,
            "grpc_per_s": gi,
            "grpc_concurrent_per_s": gc,
            "ratio": gi / bi,
            "ratio_concurrent": gc / bi,
        }
        out["text"] = {
            "model": txt_model.model_id,
            "n": len(texts),
            "bare_per_s": bt,
            "grpc_per_s": gt,
            "ratio": gt / bt,
        }
        img_client.close()
        txt_client.close()
    finally:
        for s, sv in ((img_service, img_servicer), (txt_service, txt_servicer)):
            s.stop(grace=1)
            sv.close()
    return out


def bench_video(common: CommonSettings, clips_dir: Path, n_clips: int) -> dict[str, Any]:
    """Video encoder throughput (clips/s and sampled frames/s, decode included) against the image
    encoder's frames/s on the very frames the video encoder samples, both via gRPC, cache off."""
    import io

    from prism.encoding import EncoderClient
    from prism.media.video import decode_video
    from services.image_encoder.server import build_service as build_image
    from services.image_encoder.settings import Settings as ImageSettings
    from services.video_encoder.server import build_service as build_video
    from services.video_encoder.server import limits_of
    from services.video_encoder.settings import Settings as VideoSettings

    clips = [p.read_bytes() for p in sorted(clips_dir.glob("*.mp4"))[:n_clips]]
    if not clips:
        return {}
    video_settings = VideoSettings(port=0, metrics_port=0, cache_vectors=False)
    frames: list[bytes] = []
    for c in clips:
        for im in decode_video(c, limits_of(video_settings))[1]:
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=92)
            frames.append(buf.getvalue())
    img_service, img_servicer = build_image(ImageSettings(port=0, metrics_port=0, cache_vectors=False), common)
    vid_service, vid_servicer = build_video(video_settings, common)
    for s in (img_service, vid_service):
        s.start()
        s.warm()
    try:
        img = EncoderClient(img_service.address, timeout_s=600)
        vid = EncoderClient(vid_service.address, timeout_s=600)

        def run_video() -> None:
            for i in range(0, len(clips), 4):
                vid.embed_media(clips[i : i + 4])

        def run_images() -> None:
            for i in range(0, len(frames), 32):
                img.embed_media(frames[i : i + 32])

        clip_rate = _rate(len(clips), run_video)
        frame_rate = _rate(len(frames), run_images)
        img.close()
        vid.close()
    finally:
        for s, sv in ((img_service, img_servicer), (vid_service, vid_servicer)):
            s.stop(grace=1)
            sv.close()
    per_clip = len(frames) / len(clips)
    return {
        "clips": len(clips),
        "sampled_frames_per_clip": per_clip,
        "video_clips_per_s": clip_rate,
        "video_frames_per_s": clip_rate * per_clip,
        "image_frames_per_s": frame_rate,
        "ratio": clip_rate * per_clip / frame_rate,
    }


CPU_PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")


def _interleaved(runs: Mapping[Precision, Callable[[], object]], n: int, rounds: int) -> dict[str, dict[str, float]]:
    """Items/s of each run, every round running each variant once in turn (so a load change hits
    them alike), and the median over rounds of each variant's ratio to the first's."""
    names = list(runs)
    rates: dict[Precision, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            t0 = time.perf_counter()
            runs[name]()
            rates[name].append(n / (time.perf_counter() - t0))
    base = np.array(rates[names[0]])
    return {
        name: {
            "best_per_s": max(r),
            "median_per_s": float(np.median(r)),
            "speedup": float(np.median(np.array(r) / base)),
        }
        for name, r in rates.items()
    }


def bench_precision(
    common: CommonSettings,
    catalogs: list[Catalog],
    clips_dir: Path,
    *,
    n_images: int,
    n_texts: int,
    n_clips: int,
    rounds: int,
) -> dict[str, Any]:
    """fp32 against bf16 and int8 for each encoder, in-process (no gRPC: the model's cost alone),
    on real catalog texts (full product passages) and photos and real clips."""
    from prism.media.images import decode_image
    from prism.media.video import decode_video
    from services.image_encoder import model as image_model
    from services.image_encoder.server import make_backend as image_backend
    from services.image_encoder.settings import Settings as ImageSettings
    from services.text_encoder import model as text_model
    from services.text_encoder.server import make_backend as text_backend
    from services.text_encoder.settings import Settings as TextSettings
    from services.video_encoder import model as video_model
    from services.video_encoder.server import Clip, limits_of
    from services.video_encoder.server import make_backend as video_backend
    from services.video_encoder.settings import Settings as VideoSettings

    texts: list[tuple[str, str]] = []
    photos = []
    for c in catalogs:  # the same share from each catalog: short Myntra titles, long H&M descriptions
        with_photo = [p for p in c.products() if p.images]
        texts += [("passage", p.text()) for p in with_photo[: max(1, n_texts // len(catalogs))]]
        for p in with_photo[: max(1, n_images // len(catalogs))]:
            photos.append(decode_image(c.media_path(p.images[0]).read_bytes()))
    video_settings = VideoSettings(port=0, metrics_port=0, cache_vectors=False)
    clips = [
        Clip(decode_video(f.read_bytes(), limits_of(video_settings))[1])
        for f in sorted(clips_dir.glob("*.mp4"))[:n_clips]
    ]
    out: dict[str, Any] = {}

    text_settings = {p: TextSettings(cache_vectors=False, precision=p) for p in CPU_PRECISIONS}
    text = {p: text_backend(text_model.load(s, common), s) for p, s in text_settings.items()}
    image_settings = {p: ImageSettings(cache_vectors=False, precision=p) for p in CPU_PRECISIONS}
    image = {p: image_backend(image_model.load(s, common), s) for p, s in image_settings.items()}
    video = {
        p: video_backend(video_model.load(video_settings, common, image_precision=p), video_settings)
        for p in CPU_PRECISIONS
    }

    def runs_of(backends: Mapping[Precision, Backend[T]], items: list[T]) -> dict[Precision, Callable[[], np.ndarray]]:
        return {p: functools.partial(b.run, items) for p, b in backends.items()}

    jobs: list[tuple[str, int, str, Mapping[Precision, Backend[Any]], dict[Precision, Callable[[], np.ndarray]]]] = [
        ("text", len(texts), "passages", text, runs_of(text, texts)),
        ("image", len(photos), "photos x 3 views", image, runs_of(image, photos)),
    ]
    if clips:
        jobs.append(("video", len(clips), "clips", video, runs_of(video, clips)))
    for name, n, unit, backends, runs in jobs:
        ref = runs["fp32"]()
        quality = {p: cosine_agreement(run(), ref) for p, run in runs.items()}
        speed = _interleaved(runs, n, rounds)
        out[name] = {
            "n": n,
            "unit": unit,
            "options": {p: {"model": backends[p].model_id, **speed[p], **quality[p]} for p in runs},
        }
    return out


def bench_reranker(common: CommonSettings) -> tuple[Any, str]:
    """The trained reranker of the models folder in use, else the same network untrained: the
    latency is the same (same layers, same tokens), only the ranking differs."""
    from prism.models.reranker import Reranker, RerankerConfig, load_reranker, new_cross_encoder

    if common.models_dir is not None:
        trained = load_reranker(common.models_dir, common.cache_dir)
        if trained is not None:
            return trained, "trained"
    config = RerankerConfig()
    model, tokens = new_cross_encoder(config, common.cache_dir)
    model.eval()
    reranker = Reranker(model, tokens, config, {})
    reranker.score(["warm up"] * 16, ["type: dress; colour: blue"] * 16)
    return reranker, "untrained (same network and cost)"


def bench_gateway(
    common: CommonSettings,
    catalog: Catalog,
    n_products: int,
    n_queries: int,
    reranker: Any = None,
    photo: bool = True,
) -> dict[str, Any]:
    """Search latency over HTTP at ``n_products``: text (first stage only), text reranked (with
    ``reranker``: the budget lifted so every query pays for it, and again under the default budget,
    counting the skips) and photo queries, interleaved so every kind sees the same machine."""
    import httpx

    from prism.embedded import start_suite
    from prism.lexical import Bm25Encoder, SparseTerms

    records = [p for p in catalog.products() if p.images]
    rng = np.random.default_rng(0)
    with start_suite(common=common, index_path=None, http_port=0, collection="bench") as suite:
        index = suite.gateway.core.index
        layout = suite.fusion_core.layout  # the fusion service created the collection at start
        lexical = Bm25Encoder().fit(records)  # real BM25 vectors: text search runs hybrid as in production
        suite.gateway.core.set_lexical(lexical)
        views = max(suite.gateway.core.image.info().views, 1)
        # Real records and real query encoders; vectors are synthetic unit vectors (exact search cost
        # does not depend on their content) so the benchmark does not spend minutes encoding 10k photos.
        for start in range(0, n_products, 1000):
            items = []
            for i in range(start, min(start + 1000, n_products)):
                p = records[i % len(records)]
                vecs: dict[str, np.ndarray | SparseTerms] = {}
                for name, dim in layout.dims.items():
                    shape = (views, dim) if name in layout.multivector else (dim,)
                    v = rng.standard_normal(shape).astype(np.float32)
                    vecs[name] = v / np.linalg.norm(v, axis=-1, keepdims=True)
                vecs["lexical"] = lexical.encode_document(p)
                payload = {**p.to_record(), "id": f"{p.id}-{i}", "catalog_root": str(catalog.root)}
                items.append((f"{p.id}-{i}", vecs, payload))
            index.upsert(items)
        words = ["blue", "black", "red", "white", "dress", "shirt", "shoes", "bag", "watch", "jeans", "kurta", "top"]
        photo_bytes = catalog.media_path(records[0].images[0]).read_bytes()
        lat: dict[str, list[float]] = {"text": []}
        skipped = 0
        core = suite.gateway.core
        default_settings = core.settings
        if reranker is not None:
            core.reranker = reranker
            lat["text+rerank"], lat["text+rerank, default budget"] = [], []
        if photo:
            lat["image"] = []
        with httpx.Client(base_url=suite.url, timeout=60) as client:

            def timed(kind: str, **kwargs: Any) -> dict[str, Any]:
                t0 = time.perf_counter()
                r = client.post("/v1/search", **kwargs)
                lat[kind].append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                return dict(r.json())

            for i in range(n_queries):
                text = " ".join(random.Random(i).sample(words, 2)) + f" {i}"
                timed("text", json={"text": text, "k": 20, "rerank": False})
                if reranker is not None:
                    core.settings = default_settings.model_copy(update={"rerank_budget_ms": 1e9})
                    assert timed("text+rerank", json={"text": text, "k": 20, "rerank": True})["reranked"]
                    core.settings = default_settings
                    body = timed("text+rerank, default budget", json={"text": text, "k": 20, "rerank": True})
                    skipped += body.get("rerank_skipped") == "latency_budget"
                if photo:
                    timed("image", files={"image": ("q.jpg", photo_bytes)}, data={"k": "20"})
        count = index.count()
    out: dict[str, Any] = {
        kind: {
            "products": count,
            "n": len(v),
            "p50_ms": float(np.percentile(v, 50)),
            "p99_ms": float(np.percentile(v, 99)),
        }
        for kind, v in lat.items()
    }
    if reranker is not None:
        out["text+rerank, default budget"]["skipped"] = skipped
        out["text+rerank, default budget"]["budget_ms"] = default_settings.rerank_budget_ms
        out["text+rerank"]["head"] = default_settings.rerank_head
    return out


SECTIONS = ("encoders", "video", "gateway", "rerank", "precision")


def print_precision(result: dict[str, Any]) -> None:
    width = 2 + max(len(o["model"]) for m in result.values() for o in m["options"].values())
    head = f"{'encoder':<8}{'precision':<11}{'model':<{width}}"
    print(f"\n{head}{'items/s':>9}{'speed-up':>10}{'cos mean':>10}{'cos min':>9}")
    for kind, m in result.items():
        for p, o in m["options"].items():
            print(
                f"{kind:<8}{p:<11}{o['model']:<{width}}{o['median_per_s']:>9.1f}{o['speedup']:>9.2f}x"
                f"{o['cos_mean']:>10.4f}{o['cos_min']:>9.4f}"
            )
    print("(items: text passages, photos with 3 views each, clips; speed-up: median over interleaved rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    parser.add_argument("--catalog", type=Path)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clips", type=int, default=80)
    parser.add_argument("--rerank-products", default="10000,100000", help="catalog sizes of the rerank latency runs")
    parser.add_argument("--rerank-queries", type=int, default=40)
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these sections (repeatable)")
    parser.add_argument("--precision-images", type=int, default=96, help="photos per precision round (both catalogs)")
    parser.add_argument("--precision-texts", type=int, default=256, help="passages per precision round (both catalogs)")
    parser.add_argument("--precision-clips", type=int, default=6)
    parser.add_argument("--precision-rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    common = CommonSettings()
    setup_logging("WARNING", common.log_format)
    sections = set(args.only or SECTIONS)
    catalog = Catalog.open(args.catalog or common.data_dir / "catalogs" / "myntra")
    args.out.mkdir(parents=True, exist_ok=True)
    if sections - {"precision"}:
        foundation(args, common, catalog, sections)
    if "precision" in sections:
        catalogs = [Catalog.open(common.data_dir / "catalogs" / name) for name in ("myntra", "hm")]
        precision = {
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch_threads()},
            "encoders": bench_precision(
                common,
                catalogs,
                common.data_dir / "catalogs" / "myntra-clips",
                n_images=args.precision_images,
                n_texts=args.precision_texts,
                n_clips=args.precision_clips,
                rounds=args.precision_rounds,
            ),
        }
        print_precision(precision["encoders"])
        (args.out / "precision.json").write_text(json.dumps(precision, indent=2) + "\n")
        print(f"\nwrote {args.out / 'precision.json'}")


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def foundation(args: argparse.Namespace, common: CommonSettings, catalog: Catalog, sections: set[str]) -> None:
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    if "encoders" in sections:
        result["encoders"] = bench_encoders(common, catalog, args.images, args.texts)
    if "video" in sections:
        result["video"] = bench_video(common, common.data_dir / "catalogs" / "myntra-clips", args.clips)
    if "gateway" in sections:
        result["gateway"] = bench_gateway(common, catalog, args.products, args.queries)
    if "encoders" in result:
        print(f"{'encoder':<8}{'model':<32}{'bare/s':>10}{'gRPC/s':>10}{'ratio':>8}")
        for kind, m in result["encoders"].items():
            print(f"{kind:<8}{m['model']:<32}{m['bare_per_s']:>10.1f}{m['grpc_per_s']:>10.1f}{m['ratio']:>8.2f}")
        m = result["encoders"]["image"]
        print(
            f"{'image, 4 concurrent callers x 8':<40}{m['grpc_concurrent_per_s']:>18.1f}{m['ratio_concurrent']:>8.2f}"
        )
    if result.get("video"):
        v = result["video"]
        print(
            f"\nvideo encoder: {v['video_clips_per_s']:.2f} clips/s = {v['video_frames_per_s']:.1f} sampled frames/s "
            f"({v['sampled_frames_per_clip']:.1f} per clip, decode included); image encoder on the same frames: "
            f"{v['image_frames_per_s']:.1f} frames/s; ratio {v['ratio']:.2f}"
        )
    if "gateway" in result:
        print(f"\n{'search':<8}{'products':>10}{'p50 ms':>10}{'p99 ms':>10}")
        for kind, m in result["gateway"].items():
            print(f"{kind:<8}{m['products']:>10}{m['p50_ms']:>10.1f}{m['p99_ms']:>10.1f}")
    if "rerank" in sections:
        reranker, weights = bench_reranker(common)
        result["rerank"] = {
            "weights": weights,
            "sizes": {
                n: bench_gateway(common, catalog, int(n), args.rerank_queries, reranker=reranker, photo=False)
                for n in args.rerank_products.split(",")
                if n
            },
        }
        print(f"\nreranker ({weights}): text search latency with and without it")
        print(f"{'search':<30}{'products':>10}{'p50 ms':>10}{'p99 ms':>10}{'skipped':>9}")
        for sized in result["rerank"]["sizes"].values():
            for kind, m in sized.items():
                skip = f"{m['skipped']}/{m['n']}" if "skipped" in m else ""
                print(f"{kind:<30}{m['products']:>10}{m['p50_ms']:>10.1f}{m['p99_ms']:>10.1f}{skip:>9}")
    # a partial run (--only) must not overwrite the full record
    name = "foundation.json" if sections >= {"encoders", "video", "gateway", "rerank"} else "foundation-partial.json"
    (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out / name}")


if __name__ == "__main__":
    main()
