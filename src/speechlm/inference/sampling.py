"""Logit processing for text and speech decoding: small processors, arguments validated at the door.

Speech logits arrive as ``[B, G, V]``: one row per MTP group slot (G = 1 for NTP), over the global
speech vocabulary of :class:`speechlm.layout.vocab.SpeechVocab`. Text logits are ``[B, V]`` and are
handled as ``G = 1``. Every processor maps ``(logits, history) -> logits`` where ``history [B, L]``
holds the ids already emitted, flattened in emission order (for speech: ``L`` = groups × G).

The study decodes greedily with a repetition penalty of 1.2 (Appendix C). Speech legitimately
repeats (silence, sustained vowels), so the penalty looks back over a *window* of recent frames
only, and since global speech ids are disjoint per stream, penalising the ids seen in the window
is automatically a per-stream penalty once the stream mask confines each slot to its own slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

NEG_INF = float("-inf")


class LogitsProcessor(Protocol):
    def __call__(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """``logits [B,G,V]``, ``history [B,L]`` -> processed ``logits [B,G,V]``."""


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings (YAML/CLI). Defaults follow the study: greedy, repetition penalty 1.2."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    repetition_penalty: float = 1.2  # 1.0 = off
    penalty_window: int = 16  # frames looked back for the penalty (0 = whole history)

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty >= 1.0:
            raise ValueError(f"repetition_penalty must be >= 1.0, got {self.repetition_penalty}")
        if self.penalty_window < 0:
            raise ValueError(f"penalty_window must be >= 0, got {self.penalty_window}")


class RepetitionPenalty:
    """CTRL-style penalty (Keskar et al., 2019) on ids seen in the last ``window`` history entries.

    A positive logit is divided by ``penalty`` and a negative one multiplied, so a seen token always
    becomes *less* likely whatever the sign of its logit. ``exempt`` ids (END/PAD) are never penalised.

    ``columns`` ``[G, W]`` (with ``vocab_size``) is for compact logits ``[B, G, W]`` whose column j of
    slot g scores global id ``columns[g, j]`` (the MTP head's per-slot vocabularies, study Eq. 3;
    ``columns == vocab_size`` marks an unused column); history stays in global ids.
    """

    def __init__(
        self,
        penalty: float,
        window: int = 0,
        exempt: tuple[int, ...] = (),
        columns: torch.Tensor | None = None,
        vocab_size: int | None = None,
    ) -> None:
        if penalty < 1.0:
            raise ValueError(f"repetition penalty must be >= 1.0, got {penalty}")
        if window < 0:
            raise ValueError(f"window must be >= 0 (0 = whole history), got {window}")
        if (columns is None) != (vocab_size is None):
            raise ValueError("columns and vocab_size go together (compact logits need the global vocabulary size)")
        if columns is not None and (columns.dim() != 2 or int(columns.min()) < 0 or int(columns.max()) > vocab_size):
            raise ValueError(f"columns must be [G, W] global ids in [0, {vocab_size}], got shape {tuple(columns.shape)}")
        self.penalty, self.window, self.exempt = float(penalty), int(window), tuple(exempt)
        self.columns, self.vocab_size = columns, vocab_size

    def __call__(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        B, G, W = logits.shape
        if self.penalty == 1.0 or history.numel() == 0:
            return logits
        V = self.vocab_size if self.vocab_size is not None else W
        recent = history[:, -self.window :] if self.window else history  # [B, L']
        emitted = (recent >= 0).long()  # -1 marks "nothing emitted" (finished items, padding)
        counts = torch.zeros(B, V + 1, dtype=torch.long, device=logits.device)  # + the unused-column id V
        counts.scatter_add_(1, recent.clamp(0, V - 1), emitted)
        seen = counts > 0
        if self.exempt:
            seen[:, list(self.exempt)] = False
        if self.columns is None:
            seen = seen[:, None, :V].expand(B, G, V)
        else:
            if tuple(self.columns.shape) != (G, W):
                raise ValueError(f"columns {tuple(self.columns.shape)} do not match logits {tuple(logits.shape)}")
            seen = seen[:, self.columns.to(logits.device)]  # [B,G,W]
        penalised = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return torch.where(seen, penalised, logits)


class AllowedMask:
    """Confine each slot to its allowed ids (its stream's slice + END/PAD; study Eq. 3).

    ``allowed`` is ``[G, V]`` (same for the batch) or ``[B, G, V]``.
    """

    def __init__(self, allowed: torch.Tensor) -> None:
        if allowed.dtype != torch.bool or allowed.dim() not in (2, 3):
            raise ValueError(f"allowed must be a bool [G,V] or [B,G,V] mask, got {allowed.dtype} {tuple(allowed.shape)}")
        if not bool(allowed.any(-1).all()):
            raise ValueError("allowed mask has a slot with no permitted id")
        self.allowed = allowed

    def __call__(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.allowed.shape[-2:] != logits.shape[-2:]:
            raise ValueError(f"allowed mask {tuple(self.allowed.shape)} does not match logits {tuple(logits.shape)}")
        return logits.masked_fill(~self.allowed.to(logits.device), NEG_INF)


class Temperature:
    def __init__(self, temperature: float) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return logits if self.temperature == 1.0 else logits / self.temperature


class TopK:
    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"top-k must be >= 1, got {k}")
        self.k = int(k)

    def __call__(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        k = min(self.k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, NEG_INF)


class TopP:
    """Nucleus filtering: keep the smallest set of ids whose probability mass reaches ``p``.

    The most likely id is always kept, so ``p`` close to 0 degenerates to greedy, never to nothing.
    """

    def __init__(self, p: float) -> None:
        if not 0.0 < p <= 1.0:
            raise ValueError(f"top-p must be in (0, 1], got {p}")
        self.p = float(p)

    def __call__(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.p >= 1.0:
            return logits
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # mass of strictly more likely ids
        drop_sorted = mass_before >= self.p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, NEG_INF)


def build_processors(
    cfg: SamplingConfig,
    allowed: torch.Tensor | None = None,
    exempt: tuple[int, ...] = (),
    frame_tokens: int = 1,
    columns: torch.Tensor | None = None,
    vocab_size: int | None = None,
) -> list[LogitsProcessor]:
    """The processor chain for ``cfg``: mask, penalty, then (when sampling) temperature/top-k/top-p.

    ``frame_tokens`` converts the penalty window from frames to history entries (K tokens per frame);
    ``columns``/``vocab_size``: the logits are compact per-slot columns (see :class:`RepetitionPenalty`).
    """
    procs: list[LogitsProcessor] = []
    if allowed is not None:
        procs.append(AllowedMask(allowed))
    if cfg.repetition_penalty != 1.0:
        procs.append(
            RepetitionPenalty(cfg.repetition_penalty, cfg.penalty_window * frame_tokens, exempt, columns, vocab_size)
        )
    if cfg.do_sample:
        procs.append(Temperature(cfg.temperature))
        if cfg.top_k:
            procs.append(TopK(cfg.top_k))
        procs.append(TopP(cfg.top_p))
    return procs


def choose(
    logits: torch.Tensor,
    history: torch.Tensor,
    processors: list[LogitsProcessor],
    do_sample: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply ``processors`` and pick ids: ``logits [B,G,V]`` -> ``ids [B,G]`` (argmax or a sample)."""
    if logits.dim() != 3:
        raise ValueError(f"expected logits [B,G,V], got shape {tuple(logits.shape)}")
    logits = logits.float()
    for proc in processors:
        logits = proc(logits, history)
    if not do_sample:
        return logits.argmax(-1)
    B, G, V = logits.shape
    probs = logits.softmax(-1).reshape(B * G, V)
    return torch.multinomial(probs, 1, generator=generator).reshape(B, G)
