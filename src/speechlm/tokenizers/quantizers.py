"""Discrete bottlenecks behind one interface, on top of vector-quantize-pytorch (DESIGN.md §5).

- ``rvq``: residual VQ with quantizer dropout — SoundStream §3.3 / EnCodec: during training a random
  number of levels ``1..Nq`` is kept, so the first levels alone already decode to speech (the
  coarse-to-fine order the LM layouts rely on). EMA codebooks, dead-code replacement.
- ``vq``: one codebook (BigCodec / WavTokenizer style single stream), optionally with a
  low-dimensional factorised codebook (DAC's trick for codebook usage).
- ``fsq``: finite scalar quantisation, one implicit codebook of ``prod(levels)`` entries (X-codec2's
  single FSQ stream); no codebook to learn, so no commitment loss and no collapse.

All take and return latents as ``[B, D, T]`` and codes as ``[B, K, T]`` (K = Nq for rvq, 1 otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from vector_quantize_pytorch import FSQ, ResidualVQ, VectorQuantize

QuantizerKind = Literal["rvq", "vq", "fsq"]


@dataclass(frozen=True)
class QuantizerConfig:
    codebook_size: int = 1024  # rvq/vq entries per codebook
    num_quantizers: int = 8  # rvq levels (Nq)
    codebook_dim: int | None = None  # rvq/vq: factorised low-dim codebook (None = the latent width)
    dropout: bool = True  # rvq: quantizer dropout (SoundStream §3.3)
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)  # fsq: 64,000 implicit entries
    decay: float = 0.99  # EMA decay of rvq/vq codebooks
    commitment_weight: float = 1.0
    kmeans_init: bool = False  # rvq/vq: k-means init on the first training batch
    dead_code_threshold: float = 2.0  # rvq/vq: re-seed codes used less than this (EMA count) from the batch
    cosine: bool = False  # rvq/vq: l2-normalised codes (improved VQGAN / DAC)

    def __post_init__(self) -> None:
        if self.codebook_size < 2 or self.num_quantizers < 1:
            raise ValueError(
                f"quantizer: codebook_size={self.codebook_size} must be >= 2 and num_quantizers="
                f"{self.num_quantizers} >= 1"
            )
        if not self.levels or any(level < 3 for level in self.levels):
            raise ValueError(f"quantizer: fsq levels {self.levels} must be non-empty and each >= 3")


@dataclass(frozen=True)
class Quantized:
    z: torch.Tensor  # [B, D, T] quantised latents (straight-through gradient in training)
    codes: torch.Tensor  # [B, K, T] int64
    loss: torch.Tensor  # scalar commitment loss (0 for fsq)


class Quantizer(nn.Module):
    """Wraps one vector-quantize-pytorch bottleneck; see the module docstring for the kinds."""

    def __init__(self, kind: QuantizerKind, cfg: QuantizerConfig, dim: int) -> None:
        super().__init__()
        self.kind = kind
        ema = dict(
            decay=cfg.decay,
            commitment_weight=cfg.commitment_weight,
            kmeans_init=cfg.kmeans_init,
            threshold_ema_dead_code=cfg.dead_code_threshold,
            use_cosine_sim=cfg.cosine,
        )
        # Factorised codebooks project here rather than inside the library: its VectorQuantize
        # computes the masked commitment loss in the wrong space when it projects itself.
        code_dim = cfg.codebook_dim if (cfg.codebook_dim and kind != "fsq") else dim
        self.project_in = nn.Linear(dim, code_dim) if code_dim != dim else nn.Identity()
        self.project_out = nn.Linear(code_dim, dim) if code_dim != dim else nn.Identity()
        if kind == "rvq":
            self.vq: nn.Module = ResidualVQ(
                dim=code_dim,
                num_quantizers=cfg.num_quantizers,
                codebook_size=cfg.codebook_size,
                quantize_dropout=cfg.dropout,
                **ema,
            )
            self.codebook_sizes = (cfg.codebook_size,) * cfg.num_quantizers
        elif kind == "vq":
            self.vq = VectorQuantize(dim=code_dim, codebook_size=cfg.codebook_size, **ema)
            self.codebook_sizes = (cfg.codebook_size,)
        elif kind == "fsq":
            self.vq = FSQ(levels=list(cfg.levels), dim=dim)
            self.codebook_sizes = (math.prod(cfg.levels),)
        else:
            raise ValueError(f"unknown quantizer kind {kind!r}; expected rvq, vq or fsq")

    @property
    def num_codebooks(self) -> int:
        return len(self.codebook_sizes)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> Quantized:
        """``z [B, D, T]`` (``mask [B, T]`` bool, valid frames) -> quantised latents and codes."""
        x = self.project_in(z.transpose(1, 2))
        if self.kind == "fsq":
            q, idx = self.vq(x)
            loss = z.new_zeros(())
            idx = idx.unsqueeze(-1)
        else:
            q, idx, loss = self.vq(x, mask=mask)
            loss = loss.sum()
            if self.kind == "vq":
                idx = idx.unsqueeze(-1)
        codes = idx.permute(0, 2, 1).long()  # [B, K, T]
        if mask is not None:
            codes = codes.masked_fill(~mask[:, None, :], 0)
        # Dropped-out RVQ levels come back as -1 in training; they carry no code.
        codes = codes.clamp(min=0)
        return Quantized(z=self.project_out(q).transpose(1, 2), codes=codes, loss=loss)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, K, T]`` -> latents ``[B, D, T]``."""
        idx = codes.permute(0, 2, 1)  # [B, T, K]
        if self.kind == "rvq":
            out = self.vq.get_output_from_indices(idx)
        elif self.kind == "vq":
            out = self.vq.get_output_from_indices(idx[..., 0])
        else:
            out = self.vq.indices_to_codes(idx[..., 0])
        return self.project_out(out).transpose(1, 2)
