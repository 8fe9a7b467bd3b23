"""Device, dtype, autocast and seeding: decided here and nowhere else (DESIGN.md §3).

Model code never picks a device; recipes call :func:`resolve_device` once and pass the result down.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DtypeName = Literal["fp32", "bf16", "fp16"]

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """Where and in which precision a job runs."""

    device: torch.device
    dtype: torch.dtype  # autocast dtype for matmuls; parameters stay fp32

    @property
    def autocast_enabled(self) -> bool:
        return self.dtype != torch.float32


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but MPS is not available on this machine")
    if name != "cpu" and not name.startswith(("cuda", "mps")):
        raise ValueError(f"unknown device {name!r}; expected auto, cpu, cuda[:N] or mps")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Map ``fp32/bf16/fp16`` to a torch dtype, refusing combinations the device cannot run."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}")
    dtype = DTYPES[name]
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("fp16 autocast is not supported on CPU; use bf16 or fp32")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this CUDA device does not support bf16; use fp16 or fp32")
    return dtype


def make_runtime(device: str = "auto", dtype: str = "fp32") -> Runtime:
    dev = resolve_device(device)
    return Runtime(device=dev, dtype=resolve_dtype(dtype, dev))


def autocast(runtime: Runtime) -> contextlib.AbstractContextManager:
    """Autocast context for the forward pass; a no-op in fp32."""
    if not runtime.autocast_enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=runtime.device.type, dtype=runtime.dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def set_threads(n: int | None = None) -> None:
    """Use ``n`` intra-op threads (default: all cores the process may use)."""
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
