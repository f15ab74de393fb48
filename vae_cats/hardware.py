"""What the machine a run finds can do fast, and the training precision that follows from it
(``trainer.precision: auto``).

CPUs of the same kind differ: some have AVX-512 with native bfloat16 (oneDNN runs bf16
convolutions in hardware), others AVX2 only, where PyTorch emulates bf16 and a bf16-autocast
training step of exp1 is about 9x slower than float32 (measured, reports/benchmark.md; also
pytorch/pytorch#86270, #118499 and the CPU note of the AMP docs). A recipe therefore names
``auto`` and each run resolves it on the hardware it finds.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

AUTO = "auto"
# Values of Lightning's ``precision`` that compute in bfloat16.
_BF16 = {"bf16", "bf16-mixed", "bf16-true"}


class Precision(NamedTuple):
    """A resolved training precision: ``value`` (a Lightning ``precision`` string such as
    ``32-true``), ``reason`` (the hardware fact that chose it, in words) and ``warning`` (one
    line for the user when the value is a slow choice on this hardware, else None)."""

    value: str
    reason: str
    warning: str | None = None


def cpu_capability() -> str:
    """PyTorch's name for the widest vector unit it uses on this CPU: ``AVX512``, ``AVX2``,
    ``DEFAULT`` (or ``NO AVX``) on x86, ``SVE256`` and so on elsewhere."""
    return str(torch.backends.cpu.get_cpu_capability())


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX-512 BF16, AMX or the ARM
    equivalents); False means bf16 is emulated in float32 and slow."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def describe_cpu() -> str:
    """One phrase for report headers, e.g. ``CPU capability AVX2, no native bf16``."""
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"CPU capability {cpu_capability()}, {bf16}"


def describe_hardware() -> str:
    """``describe_cpu()``, plus the first GPU's name when CUDA has one."""
    if torch.cuda.is_available():
        return f"{describe_cpu()}; GPU {torch.cuda.get_device_name(0)}"
    return describe_cpu()


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, e.g. ``0.52, 1.61, 1.70``: the one format of
    the end-of-run line of training and of the benchmarks' reports (a figure taken while the
    load exceeds the run's own threads was measured on a busy machine)."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def _on_gpu(accelerator: str) -> bool:
    if accelerator == "auto":
        return torch.cuda.is_available()
    return accelerator in ("gpu", "cuda")


def resolve_precision(requested: str | int, accelerator: str = "cpu") -> Precision:
    """The precision a run trains in.

    ``auto`` becomes, on a CUDA GPU, ``bf16-mixed`` where ``torch.cuda.is_bf16_supported()``
    else ``16-mixed``; on a CPU, ``bf16-mixed`` only where oneDNN reports native bf16, else
    ``32-true`` (float32 is never emulated). Any other value is kept as given.

    Args:
        requested: ``trainer.precision`` (``auto`` or a Lightning precision value).
        accelerator: ``trainer.accelerator``: ``cpu``, ``gpu``/``cuda`` or ``auto`` (a GPU
            when CUDA has one).

    An explicit bf16 precision on a CPU without native bf16 is kept (it runs, emulated,
    several times slower than ``32-true``) with a ``warning`` that says so.
    """
    requested = str(requested)
    on_gpu = _on_gpu(accelerator)
    if requested != AUTO:
        warning = None
        if requested in _BF16 and not on_gpu and not cpu_has_native_bf16():
            warning = (
                f"trainer.precision={requested} on a CPU without native bf16 "
                f"(capability {cpu_capability()}): PyTorch emulates it, several times slower "
                "than 32-true; trainer.precision=auto picks the fast one"
            )
        return Precision(requested, "set explicitly", warning)
    if on_gpu:
        name = torch.cuda.get_device_name(0)
        if torch.cuda.is_bf16_supported():
            return Precision("bf16-mixed", f"GPU {name}, bf16 supported")
        return Precision("16-mixed", f"GPU {name}, no bf16")
    if cpu_has_native_bf16():
        return Precision("bf16-mixed", f"CPU capability {cpu_capability()}, native bf16")
    return Precision("32-true", f"CPU capability {cpu_capability()}, no native bf16")
