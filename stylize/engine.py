"""Running a generator: device and precision choice, and the forward pass on batches of images.

Everything here works on tensors: ``(B, 3, H, W)`` float in ``[0, 1]`` in and out. Files and PIL images are
the business of :mod:`stylize.imaging` and :mod:`stylize.api`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.network import Generator

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a device that exists on this machine, or explain why not."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise StylizeError("device 'mps' is not available on this machine", "use --device cpu or --device auto")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise StylizeError(
                f"device '{name}' requested but CUDA is not available", "use --device cpu, or install a CUDA build of torch"
            )
        index_text = name.partition(":")[2] or "0"
        if not index_text.isdigit() or int(index_text) >= torch.cuda.device_count():
            raise StylizeError(
                f"device '{name}' does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)",
                "use cuda:0 ... cuda:N-1",
            )
        return torch.device(f"cuda:{index_text}")
    raise StylizeError(f"unknown device '{name}'", "use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX-512 BF16, where bf16 matrix work is several times faster than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def resolve_precision(name: str, device: torch.device, model_precision: dict[str, str] | None = None) -> str:
    """Pick ``fp32|bf16|fp16`` for ``device``.

    ``auto`` takes the precision recorded in the model file for this device type (decided when the model was
    imported or trained by comparing against fp32 on real photos), and fp32 when the file records none.
    An explicit precision the device cannot run is an error rather than a silent fallback.
    """
    name = (name or "auto").strip().lower()
    if name not in PRECISIONS:
        raise StylizeError(f"unknown precision '{name}'", f"use one of {', '.join(PRECISIONS)}")
    if name == "auto":
        name = (model_precision or {}).get(device.type, "fp32")
        if name == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
            name = "fp32"
        return name if name in _DTYPES else "fp32"
    if name == "fp16" and device.type == "cpu":
        raise StylizeError("fp16 is not supported on the CPU", "use --precision bf16 or fp32 on the CPU")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise StylizeError("this GPU does not support bf16", "use --precision fp16 or fp32")
    return name


@dataclass
class Engine:
    """A generator prepared once for one device and precision."""

    generator: Generator
    device: torch.device
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.generator = self.generator.to(self.device).eval().requires_grad_(False)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.precision == "fp32" else _DTYPES[self.precision]

    def forward(self, images: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        """Stylize ``images`` (B, 3, H, W) in [0, 1] with ``style_weights`` (S,) or (B, S); float32 result on the CPU."""
        images = images.to(self.device, non_blocking=True)
        try:
            with torch.inference_mode():
                dtype = self.autocast_dtype
                if dtype is None:
                    out = self.generator(images, style_weights)
                else:
                    with torch.autocast(self.device.type, dtype=dtype):
                        out = self.generator(images, style_weights)
        except torch.OutOfMemoryError:
            raise StylizeError(
                f"out of memory on {self.device} for a {images.shape[-1]}x{images.shape[-2]} image",
                "use --max-size to downscale, or --device cpu",
                exit_code=EXIT_FAILURE,
            ) from None
        return out.float().cpu()

