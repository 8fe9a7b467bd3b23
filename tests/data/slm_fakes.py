"""Test doubles for the SLM data pipeline: a deterministic stand-in codec and a four-row corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from speechlm.audio import save_audio
from speechlm.data.manifest import Corpus
from speechlm.tokenizers.base import SpeechTokenizer, StreamSpec, TokenizerOutput, frame_mask

SR = 16000


class FrameTokenizer(SpeechTokenizer):
    """A deterministic stand-in codec: per-frame random projections, argmax'd into K codebooks."""

    def __init__(self, seed: int = 0, speaker_dim: int = 4) -> None:
        super().__init__()
        self.sample_rate, self.frame_rate, self.coupling = SR, 50.0, "decoupled"
        self.streams = [StreamSpec("p", "prosody", 8), StreamSpec("c0", "content", 16), StreamSpec("c1", "content", 16)]
        self.speaker_dim = speaker_dim
        torch.manual_seed(seed)
        self.proj = nn.Linear(self.hop_length, 8 + 16 + 16 + speaker_dim)

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> TokenizerOutput:
        frames = self.num_frames(lengths)
        T = int(frames.max())
        x = nn.functional.pad(wav, (0, T * self.hop_length - wav.shape[1])).view(wav.shape[0], T, self.hop_length)
        h = self.proj(x)  # [B, T, 40 + Ds]
        codes = torch.stack([h[..., :8].argmax(-1), h[..., 8:24].argmax(-1), h[..., 24:40].argmax(-1)], 1)
        codes = codes.masked_fill(~frame_mask(frames, T)[:, None], 0)
        valid = frame_mask(frames, T)[..., None].float()  # [B, T, 1]
        speaker = (h[..., 40:] * valid).sum(1) / valid.sum(1) if self.speaker_dim else None
        return TokenizerOutput(codes=codes, lengths=frames, speaker=speaker)

    def decode(self, codes, lengths, speaker=None):  # pragma: no cover - not needed by the cache
        raise NotImplementedError


def make_mini_corpus(root: Path) -> Corpus:
    """Four TTS rows (train/val/test) + one QA row, sine tones of different lengths."""
    rng = np.random.default_rng(0)
    rows, qa = [], []
    for i, (split, seconds) in enumerate([("train", 0.3), ("train", 0.5), ("val", 0.4), ("test", 0.2)]):
        wav = (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * np.arange(int(SR * seconds)) / SR)).astype(np.float32)
        save_audio(root / f"audio/u{i}.wav", wav + 0.01 * rng.standard_normal(wav.shape).astype(np.float32), SR)
        rows.append({"id": f"u{i}", "audio": f"audio/u{i}.wav", "text": f"sentence {i}.", "speaker": "a" if i % 2 else "b",
                     "duration": seconds, "split": split})
    save_audio(root / "audio/q0.wav", np.full(int(SR * 0.25), 0.1, np.float32), SR)
    qa.append({"id": "q0", "audio": "audio/q0.wav", "text": "The answer is two.", "speaker": "a", "duration": 0.25,
               "split": "train", "question": "One plus one?", "answer": "two", "role": "R", "category": "math",
               "domain": "in"})
    (root / "tts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    speakers = [{"name": n, "engine": "flite", "voice": n, "seen": True, "gender": "m"} for n in ("a", "b")]
    (root / "corpus.json").write_text(json.dumps({"sample_rate": SR, "speakers": speakers, "roles": []}))
    return Corpus.open(root)
