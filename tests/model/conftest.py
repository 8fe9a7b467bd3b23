"""Hand-built batches for the model tests (independent of the data pipeline).

Speech vocabulary: K=3 streams of 8 codes -> global ids 0..23, END=24, PAD=25 (layout.SpeechVocab's
convention), G=3 slots with slot g fixed to stream g (frame-wise interleave, g % K == 0).
"""

from __future__ import annotations

import pytest
import torch

from speechlm.model.backbone import BackboneConfig
from speechlm.model.batch import IGNORE_INDEX, SLMBatch
from speechlm.model.heads import SlotVocab
from speechlm.model.slm import SLM, SLMConfig

CODES, STREAMS = 8, 3
END, PAD = CODES * STREAMS, CODES * STREAMS + 1
SPEECH_VOCAB = PAD + 1
TEXT_VOCAB = 20
TEXT_PAD, UA, SPK = 0, 18, 19  # text pad, speech-begin "[ua]", speaker placeholder
TINY = BackboneConfig()  # 2-layer Qwen2, D=32


def stream_slots(group_size: int = 3) -> SlotVocab:
    ranges = [((g % STREAMS) * CODES, (g % STREAMS + 1) * CODES) for g in range(group_size)]
    return SlotVocab.per_stream(ranges, END, PAD, SPEECH_VOCAB)


def make_model(group_size: int = 3, seed: int = 0, slots: SlotVocab | None = None, **overrides) -> SLM:
    torch.manual_seed(seed)
    cfg = SLMConfig(**{"backbone": TINY, "group_size": group_size, **overrides})
    if slots is None and group_size % STREAMS == 0:
        slots = stream_slots(group_size)
    return SLM(cfg, SPEECH_VOCAB, TEXT_VOCAB, slots=slots).eval()


def make_batch(
    group_size: int = 3, seed: int = 0, speaker_dim: int = 0, lengths: tuple[int, ...] = (12, 9), speaker_pos: int = 0
) -> SLMBatch:
    """Rows: text (speaker placeholder at ``speaker_pos``)... [ua] speech groups... [END, PAD, ...], right-padded."""
    gen = torch.Generator().manual_seed(seed)
    b, s, g = len(lengths), max(lengths), group_size
    input_ids = torch.full((b, s), TEXT_PAD)
    speech_ids = torch.full((b, s, g), PAD)
    is_speech = torch.zeros(b, s, dtype=torch.bool)
    speaker_mask = torch.zeros(b, s, dtype=torch.bool)
    attention = torch.zeros(b, s, dtype=torch.long)
    slot_stream = torch.arange(g) % STREAMS
    for row, n in enumerate(lengths):
        n_text = n // 2
        input_ids[row, :n_text] = torch.randint(1, 18, (n_text,), generator=gen)
        input_ids[row, n_text - 1] = UA
        if speaker_dim:
            input_ids[row, speaker_pos] = SPK
            speaker_mask[row, speaker_pos] = True
        codes = torch.randint(0, CODES, (n - n_text, g), generator=gen) + slot_stream * CODES
        codes[-1] = torch.tensor([END] + [PAD] * (g - 1))
        speech_ids[row, n_text:n] = codes
        is_speech[row, n_text:n] = True
        attention[row, :n] = 1
    text_labels = torch.where(~is_speech & attention.bool() & ~speaker_mask, input_ids, IGNORE_INDEX)
    speech_labels = torch.where(is_speech.unsqueeze(-1), speech_ids, IGNORE_INDEX)
    speaker = torch.randn(b, speaker_dim, generator=gen) if speaker_dim else None
    return SLMBatch(
        input_ids=input_ids,
        speech_ids=speech_ids,
        is_speech=is_speech,
        attention_mask=attention,
        text_labels=text_labels,
        speech_labels=speech_labels,
        speaker_mask=speaker_mask,
        speaker=speaker,
        ids=[f"utt{i}" for i in range(b)],
    )


@pytest.fixture
def batch() -> SLMBatch:
    return make_batch()


@pytest.fixture
def model() -> SLM:
    return make_model()
