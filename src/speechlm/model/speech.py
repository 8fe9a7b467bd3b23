"""Speech-side inputs: embeddings of global speech ids and the MTP input fusion (paper §2.2, Eq. 4).

One embedding table over the *global* speech vocabulary of ``layout.SpeechVocab`` (stream k, code c
-> ``offsets[k] + c``, then END and PAD). The global ids already keep the streams apart, so one table
is exactly the concatenation of per-stream tables -- same parameters, same gradients -- but costs one
gather instead of K, needs no per-slot stream bookkeeping (NTP and chunk-wise layouts change a slot's
stream from step to step), and the ids the data pipeline hands over are used as they are. The table
is kept apart from the LLM's text embedding (the released code appends speech tokens to the text
vocabulary instead) so the pretrained text vocabulary and its tied language head stay untouched.

Fusion turns the ``G`` embeddings of one group into one LM input vector:
- ``mean``: the arithmetic mean, as the released reference code does;
- ``linear``: concatenate -> Linear(G*D, D) (Eq. 4), initialised to compute the mean;
- ``mlp``: concatenate -> Linear -> SiLU -> Linear, the study's best (Table 6, App. E.1), added to the
  mean with its last layer zero-initialised. Both learned fusions therefore *start* as the released
  code's mean and learn away from it; the skip path is a linear function of the concatenation, so
  the mlp variant is still a function of the concatenated group as Eq. 4 asks.
For ``G = 1`` (NTP) ``mean`` is the identity and is the natural choice.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

FusionKind = Literal["linear", "mlp", "mean"]


class SpeechEmbedding(nn.Module):
    """[...,G] global speech ids -> [...,D] LM input vectors."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        group_size: int,
        fusion: FusionKind = "mlp",
        hidden: int = 0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if vocab_size <= 0 or dim <= 0 or group_size <= 0:
            raise ValueError(f"vocab_size, dim and group_size must be positive, got {vocab_size}, {dim}, {group_size}")
        if fusion not in ("linear", "mlp", "mean"):
            raise ValueError(f"unknown fusion {fusion!r}; expected 'linear', 'mlp' or 'mean'")
        self.group_size = group_size
        self.fusion = fusion
        self.table = nn.Embedding(vocab_size, dim)
        # Start speech inputs at the scale of the backbone's text embeddings (caller passes their std).
        nn.init.normal_(self.table.weight, std=init_std)
        self.linear: nn.Linear | None = None
        self.mlp: nn.Sequential | None = None
        if fusion == "linear":
            self.linear = nn.Linear(group_size * dim, dim)
            with torch.no_grad():  # W = [I/G, ..., I/G], b = 0: exactly the mean at initialisation
                self.linear.weight.copy_(torch.eye(dim).repeat(1, group_size) / group_size)
                self.linear.bias.zero_()
        elif fusion == "mlp":
            hidden = hidden or 2 * dim
            self.mlp = nn.Sequential(nn.Linear(group_size * dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def embed(self, ids: Tensor) -> Tensor:
        """[...,G] ids -> [...,G,D] per-token embeddings, before fusion."""
        return self.table(ids)

    def fuse(self, emb: Tensor) -> Tensor:
        """[...,G,D] -> [...,D] (Eq. 4)."""
        if emb.shape[-2] != self.group_size:
            raise ValueError(f"expected groups of {self.group_size} speech embeddings, got {emb.shape[-2]}")
        if self.linear is not None:
            return self.linear(emb.flatten(-2))
        mean = emb.mean(dim=-2)
        if self.mlp is not None:
            return mean + self.mlp(emb.flatten(-2))
        return mean

    def forward(self, ids: Tensor) -> Tensor:
        return self.fuse(self.embed(ids))
