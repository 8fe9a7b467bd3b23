"""How a saved tokenizer's weights are stored: fp32, fp16, or fp16 with an int8 decoder.

A shipped codec must stay small (issue 4: <= 5 MB per checkpoint), and most of its bytes are the
waveform decoder's convolution and linear weights (decoupled codec: 3.96 MB of 5.39 MB in fp16).
``fp16-int8dec`` stores each of those weights as int8 with one fp16 scale per output channel
(symmetric, absmax / 127), and everything else as fp16. Loading multiplies them back out, so the
model in memory is an ordinary float model; nothing at run time changes but the decoder's weights,
by at most half a quantisation step each.

Only the decoder is packed, on purpose: the encoder and quantisers are what produce the codes, and
an SLM is trained on those codes, so they must come out bit-identical to the unpacked codec's
(tested). The decoder only turns codes into audio; its effect on resynthesis is measured
(docs/RESULTS.md, "int8 decoder storage").

On disk the packed weight keeps its key (dtype int8) and its scale sits beside it under
``KEY + SCALE_SUFFIX``; the scheme is written into the safetensors metadata (``storage``).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

Storage = Literal["fp32", "fp16", "fp16-int8dec"]
STORAGES: tuple[str, ...] = get_args(Storage)
SCALE_SUFFIX = ".int8_scale"
PACKED_PREFIX = "decoder."  # the waveform decoder of every codec design (modules.py)
MIN_PACKED_NUMEL = 1024  # smaller weights (norms, tiny projections) are not worth a scale per row


def check_storage(storage: str) -> Storage:
    if storage not in STORAGES:
        raise ValueError(f"unknown weight storage {storage!r}; choose from {', '.join(STORAGES)}")
    return storage  # type: ignore[return-value]


def _packable(key: str, value: torch.Tensor) -> bool:
    return (
        key.startswith(PACKED_PREFIX)
        and value.is_floating_point()
        and value.dim() >= 2
        and value.numel() >= MIN_PACKED_NUMEL
    )


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight [O, ...]`` -> (``int8 [O, ...]``, ``fp16 scale [O]``), symmetric per output row."""
    w = weight.detach().float()
    absmax = w.reshape(w.shape[0], -1).abs().amax(dim=1)
    # fp16 first, so that packing and unpacking use exactly the scale that is stored.
    scale = (absmax / 127.0).clamp_min(1e-8).half()
    view = scale.float().reshape(-1, *([1] * (w.dim() - 1)))
    q = torch.round(w / view).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`quantize_rows` up to rounding: ``fp32 [O, ...]``."""
    return q.float() * scale.float().reshape(-1, *([1] * (q.dim() - 1)))


def pack(state: dict[str, torch.Tensor], storage: Storage) -> dict[str, torch.Tensor]:
    """The tensors to write for ``state`` under ``storage`` (``fp32``: unchanged)."""
    check_storage(storage)
    if storage == "fp32":
        return dict(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if storage == "fp16-int8dec" and _packable(key, value):
            if key + SCALE_SUFFIX in state:
                raise ValueError(f"cannot pack {key!r}: the state already has a key {key + SCALE_SUFFIX!r}")
            out[key], out[key + SCALE_SUFFIX] = quantize_rows(value)
        else:
            out[key] = value.half() if value.is_floating_point() else value
    return out


def unpack(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo :func:`pack`: int8 weights with a scale beside them become fp32 again; the rest as stored."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key.endswith(SCALE_SUFFIX):
            if key[: -len(SCALE_SUFFIX)] not in tensors:
                raise ValueError(f"weights file has a scale {key!r} without its int8 weight")
            continue
        scale = tensors.get(key + SCALE_SUFFIX)
        if scale is not None:
            if value.dtype != torch.int8 or scale.shape != value.shape[:1]:
                raise ValueError(f"weights file: {key!r} has a scale but is {value.dtype} {tuple(value.shape)}")
            out[key] = dequantize_rows(value, scale)
        else:
            out[key] = value
    return out
