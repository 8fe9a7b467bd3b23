"""Audio I/O: read, downmix, resample (polyphase), validate, write. soundfile + scipy; no torchaudio.

Every failure is an :class:`AudioError` (a ``ValueError``) or ``FileNotFoundError`` whose message
names the file and the problem, so that batch jobs can report bad items and carry on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

MIN_SAMPLE_RATE = 1_000  # Hz; below this a "wav" is almost surely a corrupt header
MAX_SAMPLE_RATE = 384_000  # Hz; the highest rate of common professional formats
READABLE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".mp3")


class AudioError(ValueError):
    """Audio that cannot be used, with the file and the reason in the message."""


@dataclass(frozen=True)
class Audio:
    wav: np.ndarray  # [N] float32 mono in [-1, 1]
    sample_rate: int  # Hz

    @property
    def duration(self) -> float:
        """Seconds."""
        return len(self.wav) / self.sample_rate


def check_sample_rate(sample_rate: int, source: str = "audio") -> None:
    if not (MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE):
        raise AudioError(
            f"{source}: sample rate {sample_rate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz"
        )


def check_wav(wav: np.ndarray, source: str = "audio", min_seconds: float = 0.0, sample_rate: int = 0) -> None:
    """Refuse empty, non-finite or (with ``min_seconds``) too-short mono audio."""
    if wav.ndim != 1:
        raise AudioError(f"{source}: expected mono audio [N], got shape {tuple(wav.shape)}")
    if wav.size == 0:
        raise AudioError(f"{source}: audio is empty (0 samples)")
    if not np.all(np.isfinite(wav)):
        bad = int(np.count_nonzero(~np.isfinite(wav)))
        raise AudioError(f"{source}: audio has {bad} NaN/inf samples")
    if min_seconds > 0 and sample_rate > 0 and wav.size / sample_rate < min_seconds:
        raise AudioError(f"{source}: audio is {wav.size / sample_rate:.3f} s long, shorter than {min_seconds} s")


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling of ``wav [..., N]`` (anti-aliased; exact for rational ratios)."""
    check_sample_rate(orig_sr, "resample input")
    check_sample_rate(target_sr, "resample target")
    if orig_sr == target_sr:
        return wav
    ratio = Fraction(target_sr, orig_sr)
    out = resample_poly(wav, ratio.numerator, ratio.denominator, axis=-1)
    return out.astype(np.float32, copy=False)


def downmix(wav: np.ndarray) -> np.ndarray:
    """``[N]`` or ``[N, C]`` (soundfile's layout) -> ``[N]`` by averaging channels."""
    if wav.ndim == 1:
        return wav
    if wav.ndim == 2:
        return wav.mean(axis=1)
    raise AudioError(f"expected [N] or [N, C] audio, got shape {tuple(wav.shape)}")


def load_audio(path: str | Path, sample_rate: int | None = None, min_seconds: float = 0.0) -> Audio:
    """Read ``path`` as float32 mono, resampled to ``sample_rate`` Hz when given."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        kind = "unsupported format" if path.suffix.lower() not in READABLE_SUFFIXES else "corrupt or unreadable header"
        raise AudioError(f"{path}: {kind} ({err})") from err
    check_sample_rate(info.samplerate, str(path))
    if info.frames == 0:
        raise AudioError(f"{path}: audio is empty (0 frames)")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{path}: cannot decode audio data ({err})") from err
    wav = downmix(np.asarray(data, dtype=np.float32))
    check_wav(wav, str(path))
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    check_wav(wav, str(path), min_seconds=min_seconds, sample_rate=sr)
    return Audio(wav=np.ascontiguousarray(wav, dtype=np.float32), sample_rate=int(sr))


def peak_normalize(wav: np.ndarray, peak: float = 0.95) -> np.ndarray:
    """Scale so that max |x| == ``peak``; silence is returned unchanged."""
    m = float(np.max(np.abs(wav))) if wav.size else 0.0
    return wav if m == 0.0 else (wav * (peak / m)).astype(np.float32)


def rms_db(wav: np.ndarray) -> float:
    """Root-mean-square level in dBFS (-inf for digital silence)."""
    if wav.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def save_audio(path: str | Path, wav: np.ndarray, sample_rate: int) -> Path:
    """Write 16-bit PCM wav (clipped to [-1, 1]) atomically; creates parent folders."""
    path = Path(path)
    check_sample_rate(sample_rate, str(path))
    wav = np.asarray(wav, dtype=np.float32)
    check_wav(wav, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    sf.write(str(tmp), np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16")
    tmp.replace(path)
    return path
