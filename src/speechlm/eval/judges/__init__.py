"""Judges of generated speech (DESIGN.md §4): ASR (WER), speaker (SIM) and quality (MOS).

Each takes ``wav: np.ndarray [N]`` float32 at 16 kHz, has a ``name`` and ``sample_rate``, an
offline default (``AsrJudge.default(corpus_dir)``, ``SpeakerJudge.default()``,
``QualityJudge.default()``) and an adapter for the study's judge loaded from a local path.
"""

from speechlm.eval.judges.asr import AsrJudge, PocketsphinxConfig, PocketsphinxJudge, WhisperJudge
from speechlm.eval.judges.base import JUDGE_SAMPLE_RATE
from speechlm.eval.judges.config import (
    AsrConfig,
    Judges,
    JudgesConfig,
    QualityConfig,
    SpeakerConfig,
    build_asr,
    build_judges,
)
from speechlm.eval.judges.quality import DnsmosJudge, QualityJudge, UtmosJudge
from speechlm.eval.judges.speaker import ResemblyzerJudge, SpeakerJudge, WavLMJudge

__all__ = [
    "JUDGE_SAMPLE_RATE",
    "AsrConfig",
    "AsrJudge",
    "DnsmosJudge",
    "Judges",
    "JudgesConfig",
    "PocketsphinxConfig",
    "PocketsphinxJudge",
    "QualityConfig",
    "QualityJudge",
    "ResemblyzerJudge",
    "SpeakerConfig",
    "SpeakerJudge",
    "UtmosJudge",
    "WavLMJudge",
    "WhisperJudge",
    "build_asr",
    "build_judges",
]
