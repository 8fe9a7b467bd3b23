"""Training losses of the SLM (paper Eqs. 1-3 and §2.2; weighting of the released code).

- text: cross-entropy of the language head on the next text token;
- speech: for a group of ``G`` tokens predicted from one hidden state, the mean over the group of the
  per-token cross-entropy, ``L = 1/g * sum_k -log P(s_k | X)`` (§2.2). As in the released code each
  slot's loss is first averaged over the positions that supervise it, then the slots are averaged;
  the per-slot values are returned for logging;
- total: ``w_text * L_text + w_speech * L_speech`` (released code: 0.2 / 0.8).

Inputs are already shifted and selected: row ``n`` holds the logits of one hidden state and the
label of the position after it. A loss with nothing to supervise is an exact zero that keeps the
graph (``logits.sum() * 0``), never NaN -- e.g. a TTS batch whose text is all prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from speechlm.model.batch import IGNORE_INDEX


@dataclass(frozen=True)
class SpeechLoss:
    loss: Tensor  # [] mean over the slots that have labels
    per_slot: Tensor  # [G] each slot's mean CE (0 where a slot has no label), detached
    accuracy: Tensor  # [] top-1 accuracy over all supervised (position, slot) pairs, detached


def text_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``logits`` [N,Vt], ``labels`` [N] (may hold -100) -> (mean CE, top-1 accuracy)."""
    valid = labels != IGNORE_INDEX
    if not bool(valid.any()):
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
    accuracy = (logits.argmax(-1) == labels)[valid].float().mean()
    return loss, accuracy.detach()


def speech_loss(logits: Tensor, labels: Tensor) -> SpeechLoss:
    """``logits`` [N,G,Vs], ``labels`` [N,G] (may hold -100) -> per-slot mean CE, averaged over slots."""
    n, g, v = logits.shape
    valid = labels != IGNORE_INDEX  # [N,G]
    token_ce = F.cross_entropy(
        logits.float().reshape(n * g, v), labels.reshape(n * g), ignore_index=IGNORE_INDEX, reduction="none"
    ).reshape(n, g)
    counts = valid.sum(0)  # [G]
    per_slot = token_ce.sum(0) / counts.clamp(min=1)
    has_labels = counts > 0
    if not bool(has_labels.any()):
        zero = logits.sum() * 0.0
        return SpeechLoss(zero, per_slot.detach(), zero.detach())
    loss = per_slot[has_labels].mean()
    accuracy = (logits.argmax(-1) == labels)[valid].float().mean()
    return SpeechLoss(loss, per_slot.detach(), accuracy.detach())


def combine(text: Tensor, speech: Tensor, text_weight: float, speech_weight: float) -> Tensor:
    """The training objective: a fixed weighting of the two heads' losses."""
    return text_weight * text + speech_weight * speech


def masked_positions(labels: Tensor) -> Tensor:
    """[B,S] or [B,S,G] labels -> [B,S] bool: positions that carry at least one label."""
    valid = labels != IGNORE_INDEX
    return valid if valid.ndim == 2 else valid.any(-1)

