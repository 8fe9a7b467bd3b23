"""Guided attention: a diagonal prior on the attention between a row's speech and the words it says.

A decoder-only SLM has to find out by itself which words each speech step is saying. The study's SLM
starts from a pretrained 0.5B LLM and hundreds of hours of speech; the laptop-scale models here start from
random weights, and they learn how a sentence *begins* long before they learn to follow it
(docs/RESULTS.md, "Why the SLMs do not read yet": the text gain sits in the first quarter of each
utterance). Guided attention (Tachibana et al. 2018, "Efficiently trainable text-to-speech system based on
deep convolutional networks with guided attention", §4.2) is the classic remedy for attention-based TTS:
text and speech run through the sentence at roughly the same relative pace, so the attention from query
``q`` of ``Q`` to key ``k`` of ``K`` is charged

    W[q, k] = 1 - exp(-(q / Q - k / K)^2 / (2 sigma^2))          (sigma = 0.2 in the paper)

Here the decoder's self-attention plays the part of cross-attention: in a TTS (or role-QA) row the speech
positions are the queries and the ``{text}`` tokens the keys; in an ASR row the transcript's tokens are the
queries and the speech positions the keys (``SLMBatch.aligned_text`` marks the ``{text}`` field). Only a few
heads are guided (the first ``heads`` of each listed layer); every other key costs them ``W = 1``, so they
become pure pointer heads into the other modality while the rest of the network stays free. The loss is the
charged attention mass, averaged over guided heads and query positions (0 = on the diagonal, 1 = elsewhere).

This is an extension beyond the study (off by default, ``weight: 0``); it needs eager attention, since
SDPA kernels do not return attention weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class GuidedAttentionConfig:
    """YAML ``model.guided``. ``weight`` multiplies the loss in the training objective; 0 = off."""

    weight: float = 0.0
    layers: tuple[int, ...] = (1, 2)  # decoder layers (0-based) whose heads are guided
    heads: int = 2  # the first ``heads`` query heads of each listed layer
    sigma: float = 0.2  # width of the diagonal band, in fractions of the sentence (Tachibana et al.: 0.2)

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"guided.weight must be >= 0, got {self.weight}")
        if self.heads < 1:
            raise ValueError(f"guided.heads must be >= 1, got {self.heads}")
        if self.sigma <= 0:
            raise ValueError(f"guided.sigma must be > 0, got {self.sigma}")
        if not self.layers or min(self.layers) < 0 or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"guided.layers must be distinct layer indices >= 0, got {list(self.layers)}")

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def check_fits(self, num_layers: int, num_heads: int) -> None:
        """ValueError unless every guided layer and head exists in a backbone of this size."""
        if max(self.layers) >= num_layers:
            raise ValueError(f"guided.layers {list(self.layers)} name a layer the {num_layers}-layer backbone lacks")
        if self.heads > num_heads:
            raise ValueError(f"guided.heads={self.heads} but the backbone has num_heads={num_heads}")


def _relative_rank(mask: Tensor) -> Tensor:
    """[B,S] bool -> [B,S] float: each marked position's rank within its row over (count - 1), in [0, 1]."""
    rank = mask.long().cumsum(-1) - 1
    count = mask.sum(-1, keepdim=True)
    return rank.float() / (count - 1).clamp(min=1).float()


def diagonal_penalty(aligned_text: Tensor, is_speech: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """The charge ``W`` [B,S,S] (query, key) and the guided query positions [B,S] bool of each row.

    The span that comes second in a row asks (speech after its sentence: TTS, role-QA; a transcript after
    its speech: ASR); the first span answers. Rows without both spans have no guided queries.
    """
    S = aligned_text.shape[1]
    positions = torch.arange(S, device=aligned_text.device)
    first_text = torch.where(aligned_text, positions, S).min(-1).values  # [B]
    first_speech = torch.where(is_speech, positions, S).min(-1).values  # [B]
    text_asks = (first_speech < first_text)[:, None]  # [B,1]
    queries = torch.where(text_asks, aligned_text, is_speech)
    keys = torch.where(text_asks, is_speech, aligned_text)
    both = (aligned_text.any(-1) & is_speech.any(-1))[:, None]
    queries = queries & both
    dist = _relative_rank(queries)[:, :, None] - _relative_rank(keys)[:, None, :]  # [B,S,S]
    charge = 1.0 - torch.exp(-dist.square() / (2 * sigma * sigma))
    charge = torch.where(keys[:, None, :], charge, torch.ones_like(charge))
    return charge, queries


def guided_attention_loss(
    attentions: Sequence[Tensor], aligned_text: Tensor, is_speech: Tensor, cfg: GuidedAttentionConfig
) -> Tensor:
    """Mean charged attention mass of the guided heads; ``attentions``: per layer [B,H,S,S] (rows sum to 1)."""
    cfg.check_fits(len(attentions), attentions[0].shape[1])  # pretrained backbones are only known here
    charge, queries = diagonal_penalty(aligned_text, is_speech, cfg.sigma)
    if not bool(queries.any()):
        return attentions[cfg.layers[0]].sum() * 0.0  # nothing to guide (e.g. text-only rows): an exact zero
    per_query = sum(
        (attentions[layer][:, : cfg.heads].float() * charge[:, None]).sum(-1).mean(1) for layer in cfg.layers
    )  # [B,S]: charged mass per query, summed over layers, averaged over guided heads
    return per_query[queries].mean() / len(cfg.layers)
