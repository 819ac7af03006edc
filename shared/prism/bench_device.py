"""``python -m prism.bench_device``: the image encoder on an accelerator, against float32 on the CPU.

GPU nodes run the encoders in production; this measures, in one process, what each precision
(``fp32``, ``bf16``, ``fp16``) on ``--device`` gives against the CPU's float32 vectors of the same
product photos: cosine mean and minimum (the vectors the index holds must stay comparable), and
photos per second through ``ImageEmbedder.embed_views`` (preprocessing on the CPU included, as the
service runs it) and through the network alone (a prepared batch already on the device), and
what resizing the photos into their views in several threads (``preprocess_threads``) gives there.

It needs only torch, Pillow and the packaged EfficientNet-Lite0 weights, so it runs on a bare GPU
machine with the repository's ``shared/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "bf16", "fp16")


def _photos(folder: Path, n: int) -> list[Any]:
    from prism.media.images import decode_image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))[:n]
    if not files:
        raise SystemExit(f"no photos under {folder}")
    return [decode_image(p.read_bytes()) for p in files]


def _rate(fn: Any, items: int, repeats: int) -> float:
    fn()  # warm-up: kernels chosen, caches filled
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return items * repeats / (time.perf_counter() - t0)


def run(
    photos: Sequence[Any],
    device: str,
    batch_sizes: Sequence[int],
    repeats: int,
    preprocess_threads: Sequence[int] = (),
    network_repeats: int = 10,
) -> dict[str, Any]:
    import torch

    from prism.models.efficientnet import default_preprocess_threads, load_image_embedder, preprocess_uint8
    from prism.vectors import cosine_agreement

    cpu = load_image_embedder(device="cpu", precision="fp32", batch_size=32)
    ref = cpu.embed_views(photos)
    out: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else device,
        "torch": torch.__version__,
        "photos": len(photos),
        "cpu_fp32_photos_per_s": round(_rate(lambda: cpu.embed_views(photos), len(photos), 1), 1),
        "precisions": {},
    }
    x_cpu = preprocess_uint8(photos)  # (n, 3, 224, 224) uint8: the network-only timing's input
    # fp16 is GPU-only (refused on a CPU at load: prism.models.precision)
    for precision in PRECISIONS if device.startswith("cuda") else ("fp32", "bf16"):
        row: dict[str, Any] = {}
        for bs in batch_sizes:
            emb = load_image_embedder(device=device, precision=precision, batch_size=bs)  # type: ignore[arg-type]
            agreement = cosine_agreement(emb.embed_views(photos), ref)
            row[f"batch_{bs}"] = {
                "cosine_mean": round(agreement["cos_mean"], 5),
                "cosine_min": round(agreement["cos_min"], 5),
                "photos_per_s": round(_rate(lambda e=emb: e.embed_views(photos), len(photos), repeats), 1),
            }
            x = x_cpu[:bs].to(device)

            def network(e: Any = emb, x: Any = x) -> None:
                for _ in range(network_repeats):
                    e._features(x)  # noqa: SLF001 -- the network alone is what this times

            row[f"batch_{bs}"]["network_images_per_s"] = round(_rate(network, len(x) * network_repeats, 1), 1)
        out["precisions"][precision] = row
    # The views resized in one thread against the default pool, side by side, in the device's
    # serving precision at the largest batch (the rows above use the default).
    chosen = "fp16" if device.startswith("cuda") else "fp32"
    bs = max(batch_sizes)
    counts = sorted({1, default_preprocess_threads(torch.device(device)), *preprocess_threads})
    out["preprocess_threads"] = {"precision": chosen, "batch": bs}
    for _ in range(2):  # alternate, twice: the machine's noise hits both
        for n in counts:
            emb = load_image_embedder(device=device, precision=chosen, batch_size=bs, preprocess_threads=n)  # type: ignore[arg-type]
            rate = _rate(lambda e=emb: e.embed_views(photos), len(photos), repeats)
            out["preprocess_threads"].setdefault(f"photos_per_s_{n}", []).append(round(rate, 1))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m prism.bench_device", description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=Path, required=True, help="folder of product photos (searched recursively)")
    p.add_argument("--n", type=int, default=512, help="photos to use")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, action="append", help="batch sizes (default 32 and 128)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--preprocess-threads", type=int, action="append", default=[], help="also time these view-resizing threads"
    )
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args(argv)
    result = run(
        _photos(args.photos, args.n), args.device, args.batch or [32, 128], args.repeats, args.preprocess_threads
    )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
