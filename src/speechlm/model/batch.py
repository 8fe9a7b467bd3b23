"""The one batch type the SLM trains on (the data pipeline collates into it; shared API).

Every LM position ``s`` is either a text token or one speech *group* of ``G`` global speech ids
(``G = 1`` for NTP, ``G = g`` for MTP; paper §2.2). Both id tensors are always full size so that the
model can embed them with two gathers and pick per position with ``is_speech``: text positions hold
the speech pad id in ``speech_ids`` and speech positions hold the text pad id in ``input_ids``.

Labels follow the Hugging Face convention: aligned with the inputs, ``-100`` = no loss, and the
model shifts them, so that hidden state ``s`` predicts position ``s + 1`` -- with the speech heads
when position ``s + 1`` is speech and with the language head otherwise (paper Eqs. 1-3).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SLMBatch:
    input_ids: Tensor  # [B,S] long, text ids; text pad at speech positions
    speech_ids: Tensor  # [B,S,G] long, global speech ids; speech pad at text positions
    is_speech: Tensor  # [B,S] bool, position holds a speech group
    attention_mask: Tensor  # [B,S] long/bool, 1 = real position, 0 = padding (right-padded)
    text_labels: Tensor  # [B,S] long, text id of this position or -100
    speech_labels: Tensor  # [B,S,G] long, speech ids of this position or -100
    speaker_mask: Tensor  # [B,S] bool, placeholder positions replaced by the projected speaker vector
    speaker: Tensor | None = None  # [B,Ds] float, continuous speaker vector (study §2.3)
    aligned_text: Tensor | None = None  # [B,S] bool, text the row's speech says or transcribes (guided attention)
    ids: list[str] = dataclasses.field(default_factory=list)  # [B] utterance ids, for reports

    def __post_init__(self) -> None:
        b, s = self.input_ids.shape
        g = self.speech_ids.shape[-1]
        expected = {
            "speech_ids": (b, s, g),
            "is_speech": (b, s),
            "attention_mask": (b, s),
            "text_labels": (b, s),
            "speech_labels": (b, s, g),
            "speaker_mask": (b, s),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"SLMBatch.{name} has shape {list(got)}, expected {list(shape)} (B={b}, S={s}, G={g})")
        if self.is_speech.dtype != torch.bool or self.speaker_mask.dtype != torch.bool:
            raise ValueError("SLMBatch.is_speech and SLMBatch.speaker_mask must be bool tensors")
        if self.aligned_text is not None and (self.aligned_text.shape != (b, s) or self.aligned_text.dtype != torch.bool):
            raise ValueError(f"SLMBatch.aligned_text must be a [{b}, {s}] bool tensor, got {list(self.aligned_text.shape)}")
        if self.speaker is not None and (self.speaker.ndim != 2 or self.speaker.shape[0] != b):
            raise ValueError(f"SLMBatch.speaker has shape {list(self.speaker.shape)}, expected [{b}, Ds]")
        if self.ids and len(self.ids) != b:
            raise ValueError(f"SLMBatch.ids has {len(self.ids)} entries for a batch of {b}")

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    @property
    def group_size(self) -> int:
        return self.speech_ids.shape[-1]

    def speech_steps(self) -> Tensor:
        """[B,S] long: each speech position's index within its run of speech positions (0 at the
        first group after text; the layout's group index). Text positions get -1."""
        positions = torch.arange(self.seq_len, device=self.is_speech.device).expand_as(self.is_speech)
        last_text = positions.masked_fill(self.is_speech, -1).cummax(dim=1).values
        return (positions - last_text - 1).masked_fill(~self.is_speech, -1)

    def to(self, device: torch.device | str) -> SLMBatch:
        """A copy with every tensor on ``device`` (non-blocking where the source is pinned)."""
        moved = {
            f.name: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }
        return SLMBatch(**moved)
