"""Speaker judges: an embedding per utterance; SIM = cosine of two embeddings (study Appendix D).

- :class:`ResemblyzerJudge` — the offline default: resemblyzer's GE2E d-vector (256-d; weights
  ship in its wheel), with its own preprocessing (volume normalisation, VAD trimming of long
  pauses, 1.6 s partial windows averaged).
- :class:`WavLMJudge` — the study's judge family (WavLM + TDNN x-vector head) from a local
  ``save_pretrained`` directory via transformers' WavLMForXVector; its feature extractor is pure
  numpy, so no torchaudio is involved.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from speechlm.audio import AudioError
from speechlm.eval.judges.base import JUDGE_SAMPLE_RATE, prepare_wav, require_dir
from speechlm.eval.metrics import cosine

MIN_SECONDS = 0.2  # resemblyzer's VAD works on 30 ms windows and smooths over 8 of them


class SpeakerJudge(abc.ABC):
    """``embed(wav [N] float32 @ 16 kHz) -> [Ds]``; ``similarity`` is the cosine (SIM)."""

    name: str
    sample_rate: int = JUDGE_SAMPLE_RATE

    @abc.abstractmethod
    def embed(self, wav: np.ndarray) -> np.ndarray:
        """One speaker embedding ``[Ds]`` (float32)."""

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        """SIM of two clips."""
        return cosine(self.embed(a), self.embed(b))

    @classmethod
    def default(cls) -> SpeakerJudge:
        return ResemblyzerJudge()

    @classmethod
    def wavlm(cls, path: str | Path, device: str = "cpu") -> SpeakerJudge:
        return WavLMJudge(path, device=device)


class ResemblyzerJudge(SpeakerJudge):
    name = "resemblyzer"

    def __init__(self, device: str = "cpu") -> None:
        from resemblyzer import VoiceEncoder

        self._encoder = VoiceEncoder(device=device, verbose=False)

    def embed(self, wav: np.ndarray) -> np.ndarray:
        from resemblyzer import preprocess_wav

        wav = prepare_wav(wav, self.name, MIN_SECONDS)
        # Resemblyzer's own preprocessing (it expects 16 kHz already: no resampling here).
        speech = preprocess_wav(wav)
        if speech.size < JUDGE_SAMPLE_RATE // 10:
            raise AudioError(f"{self.name}: less than 0.1 s of speech found by the VAD (silent or noise-only clip)")
        return self._encoder.embed_utterance(speech).astype(np.float32)


class WavLMJudge(SpeakerJudge):
    """WavLMForXVector (e.g. microsoft/wavlm-base-plus-sv) from a local directory."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        import torch
        from transformers import AutoFeatureExtractor, WavLMForXVector

        path = require_dir(path, "WavLM x-vector")
        self.name = f"wavlm-xvector:{path.name}"
        self.device = torch.device(device)
        self.features = AutoFeatureExtractor.from_pretrained(path)
        self.model = WavLMForXVector.from_pretrained(path).to(self.device).eval()

    def embed(self, wav: np.ndarray) -> np.ndarray:
        import torch

        wav = prepare_wav(wav, self.name, MIN_SECONDS)
        inputs = self.features(wav, sampling_rate=JUDGE_SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(input_values=inputs["input_values"].to(self.device))
        return out.embeddings[0].float().cpu().numpy()
