"""Numeric precision: which one a job computes in, decided on the device it runs on.

A config names ``precision`` (training autocast) and ``encode_precision`` (encoding autocast) as
``fp32``, ``bf16``, ``fp16`` or ``auto``. ``auto`` resolves in the job, on its device: bf16 where
the device runs bf16 natively (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX that
oneDNN uses, as PyTorch reports it), else fp32. fp16 is a GPU precision: asked for on a CPU it
resolves as ``auto`` does. bf16 asked for explicitly on a CPU without native support still runs,
with one warning: PyTorch then emulates it, 4-23x slower than fp32 (bench/precision.py).

The value stays ``auto`` in the config, so cached outputs do not depend on where the config was
read; what a job resolved is logged at its start and recorded in what it writes (the finetune
run's run.json, the embedding store's manifest, evaluate's metrics.json), and the aggregate
tables refuse to set side by side runs of one (dataset, model) computed at different precisions.
"""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)

AUTO = "auto"
PRECISIONS = (AUTO, "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# all-MiniLM-L6-v2 on 2-core AVX2-only AMD EPYCs (no native bf16): 6.5x and 23x by bench/precision.py
# (README "Benchmarks"), 4.4x and 9x in the measurement that found the problem, on a busier machine.
EMULATED_BF16_SLOWDOWN = "encoding 4-7x and a training step 9-23x slower than fp32"


def device_type(device) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


def native_bf16(device) -> bool:
    """Whether ``device`` computes bf16 in hardware (not emulated)."""
    if device_type(device) == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_native_bf16()


def cpu_native_bf16() -> bool:
    """bf16 instructions (AVX512-BF16 or AMX) that oneDNN, PyTorch's CPU backend for matmuls, uses.

    oneDNN's own check honours ONEDNN_MAX_CPU_ISA (a CPU limited to AVX2 that way emulates bf16);
    cpuinfo's flags tell AVX512-BF16/AMX from an AVX-512 CPU that oneDNN would still emulate on.
    """
    instructions = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return bool(instructions and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_description() -> str:
    """The CPU class as PyTorch sees it, e.g. 'AVX512, native bf16' or 'AVX2, no native bf16'."""
    native = "native bf16" if cpu_native_bf16() else "no native bf16"
    return f"{torch.backends.cpu.get_cpu_capability()}, {native}"


def resolve(requested: str, device) -> str:
    """The precision a job computes in on ``device`` for the config's ``requested`` value.

    Logged once per process and value; an explicit bf16 that will be emulated warns once."""
    return _resolve(requested, str(device))


@functools.cache
def _resolve(requested: str, device: str) -> str:
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    kind = device_type(device)
    where = f"cuda ({torch.cuda.get_device_name(device)})" if kind == "cuda" else f"cpu ({cpu_description()})"
    resolved = requested
    if requested == AUTO or (requested == "fp16" and kind == "cpu"):
        resolved = "bf16" if native_bf16(device) else "fp32"
    if requested == "fp16" and kind == "cpu":
        log.warning("precision fp16 needs a GPU; on %s it resolves as auto: %s", where, resolved)
    elif requested == "bf16" and not native_bf16(device):
        log.warning(
            "precision bf16 on %s is emulated by PyTorch, %s (bench/precision.py): set the model's "
            "precision and encode_precision to auto (or fp32) in the config to run fast here",
            where,
            EMULATED_BF16_SLOWDOWN,
        )
    log.info("precision %s resolves to %s on %s", requested, resolved, where)
    return resolved


def autocast(device, precision: str):
    """Autocast context for ``precision`` (resolved first) on ``device``; fp32 is no autocast."""
    import contextlib

    dtype = DTYPES[resolve(precision, device)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type(device), dtype=dtype)
