"""What every judge shares: the 16 kHz mono float32 input contract and its validation.

Judges score generated speech (DESIGN.md §4): a bad clip must produce a clear
:class:`~speechlm.audio.AudioError` naming the judge and the problem — never a crash deep inside
a model, and never a silently meaningless number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from speechlm.audio import AudioError, check_wav

JUDGE_SAMPLE_RATE = 16_000  # Hz; every judge model here was trained on 16 kHz speech


def prepare_wav(wav: np.ndarray, judge: str, min_seconds: float = 0.0) -> np.ndarray:
    """Validate ``wav [N]`` (16 kHz) for ``judge``; return it as contiguous float32 in [-1, 1]."""
    wav = np.asarray(wav)
    if not np.issubdtype(wav.dtype, np.floating):
        raise AudioError(f"{judge}: expected float audio in [-1, 1], got dtype {wav.dtype}")
    check_wav(wav, f"{judge} input", min_seconds=min_seconds, sample_rate=JUDGE_SAMPLE_RATE)
    return np.ascontiguousarray(np.clip(wav, -1.0, 1.0), dtype=np.float32)


def to_pcm16(wav: np.ndarray) -> bytes:
    """float32 [-1, 1] -> little-endian 16-bit PCM bytes (pocketsphinx, webrtcvad)."""
    return (np.clip(wav, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def require_dir(path: str | Path, what: str) -> Path:
    """A local checkpoint directory, or a FileNotFoundError saying what was expected there."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} checkpoint directory not found: {path}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json; expected a {what} checkpoint saved with save_pretrained")
    return path
