"""Numeric precision of an encoder's forward pass: what each value means, where it may run, and
how it shows in the model id.

* ``fp32`` (default): float32 weights and activations, on the CPU or a GPU.
* ``bf16``: bfloat16 weights and activations (pooling and normalisation of the output stay in
  float32).  On these CPUs (AVX512-BF16) it is the best text option; on a GPU it works too.
* ``int8``: CPU only.  Text: dynamic int8 quantization of the BERT linear layers; image (and
  video, which reuses the image network): static int8 through ONNX Runtime, calibrated on real
  catalog photos.  See :mod:`prism.models.text` and :mod:`prism.models.efficientnet_int8`.
* ``fp16``: GPU only.  CPUs have no fast float16 arithmetic, so asking for it on a CPU is refused
  at load time rather than silently running 5-10x slower or falling back to another precision.

Vectors from different precisions differ slightly (cosine 0.98-0.99999 to fp32, measured in the
README), so the precision is part of the model id: the vector cache and the ingestion content
hashes key on the model id, and vectors of two precisions never mix.  fp32 keeps the plain id, so
vectors cached before precisions existed (all fp32 on the CPU) stay valid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, get_args

from prism.errors import PrismError

if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "bf16", "int8", "fp16"]
PRECISIONS: Final[tuple[str, ...]] = get_args(Precision)


class PrecisionError(PrismError, ValueError):
    """A precision that cannot run where it was asked to (fp16 on a CPU, int8 on a GPU)."""


def tagged_model_id(model_id: str, precision: Precision) -> str:
    """``model_id`` for fp32, ``model_id@<precision>`` otherwise (a different cache key)."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return model_id if precision == "fp32" else f"{model_id}@{precision}"


def check_device(precision: Precision, device: torch.device, *, what: str) -> None:
    """Refuse combinations that have no fast kernels, with the setting to change in the message."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r} for {what}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise PrecisionError(
            f"{what}: precision fp16 needs a CUDA device, got {device.type!r}; on a CPU use bf16 "
            f"(same speed-up, no float16 arithmetic there) or int8"
        )
    if precision == "int8" and device.type != "cpu":
        raise PrecisionError(
            f"{what}: precision int8 runs on the CPU only (got device {device.type!r}); on a GPU use fp16 or bf16"
        )


def fast_cpu_precision() -> Precision:
    """``bf16`` where the CPU computes bfloat16 natively (AVX512-BF16 or AMX), else ``fp32``:
    emulated bfloat16 is far slower than float32 (EfficientNet-Lite0 on an AVX2-only EPYC: 2.7
    against 34.6 images/s), so it is only a speed-up where the hardware has it."""
    import torch

    def supported(probe: str) -> bool:
        check = getattr(torch.cpu, probe, None)  # private probes: absent in some builds
        return bool(check()) if callable(check) else False

    return "bf16" if supported("_is_avx512_bf16_supported") or supported("_is_amx_tile_supported") else "fp32"
