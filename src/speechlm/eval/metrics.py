"""Evaluation metrics: WER/CER, SIM, EM/F1, STOI/PESQ, RTF and the success-rate rule.

Definitions follow the study's Appendix D (arXiv 2506.12537):
- **WER/CER** are corpus-level: total edits / total reference words (characters), after the one
  text normaliser of this module (:func:`normalize_text`), so that every WER in the project is
  comparable whichever ASR judge produced the hypotheses.
- **SIM** is the cosine similarity of two speaker embeddings (:func:`cosine`).
- **EM / F1** use SQuAD's answer normalisation (lower case, no punctuation, no articles a/an/the,
  single spaces) and token-bag F1 (TP = tokens in both, Appendix D).
- **SR** (success rate) is the fraction of utterances that :func:`check_success` accepts.
- **STOI / PESQ** (pystoi, pesq) measure codec resynthesis against the original (Appendix A.2).
"""

from __future__ import annotations

import collections
import math
import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import jiwer
import numpy as np

from speechlm.audio import AudioError, check_wav, resample, rms_db

# --------------------------------------------------------------------------------------------
# Text normalisation shared by every WER/CER
# --------------------------------------------------------------------------------------------

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand"), (100, "hundred"))
_NUMBER_RE = re.compile(r"\d+(?:,\d{3})*")
_PUNCT_RE = re.compile(r"[^\w\s']|_")  # everything but letters, digits, spaces and apostrophes
_SPACE_RE = re.compile(r"\s+")


def number_to_words(n: int) -> str:
    """``1984`` -> ``"one thousand nine hundred eighty four"`` (non-negative integers)."""
    if n < 0:
        raise ValueError(f"number_to_words expects a non-negative integer, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            words = f"{number_to_words(head)} {name}"
            return words if rest == 0 else f"{words} {number_to_words(rest)}"
    raise AssertionError("unreachable")


def normalize_text(text: str) -> str:
    """The one normaliser applied to references and hypotheses before every WER/CER.

    1. Unicode NFKC and case folding ("Ünïcode" variants compare equal; "The" == "the").
    2. Digit strings become words ("3" -> "three", "1,200" -> "one thousand two hundred"): the
       built-in corpus writes numbers as words while Whisper writes digits.
    3. "&" -> "and"; a typographic apostrophe is a plain one; hyphens, slashes and every other punctuation mark become spaces, except an
       apostrophe inside a word ("don't" stays one word, as in the CMU dictionary); a quote
       apostrophe at a word edge is dropped.
    4. Whitespace is collapsed; the result has no leading/trailing space.
    """
    text = unicodedata.normalize("NFKC", text).casefold().replace("&", " and ").replace("\u2019", "'")
    text = _NUMBER_RE.sub(lambda m: f" {number_to_words(int(m.group().replace(',', '')))} ", text)
    text = _PUNCT_RE.sub(" ", text)
    words = (w.strip("'") for w in text.split())
    return _SPACE_RE.sub(" ", " ".join(w for w in words if w)).strip()


# --------------------------------------------------------------------------------------------
# WER / CER
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCounts:
    """Edit counts of a hypothesis list against its references (after normalisation)."""

    substitutions: int
    deletions: int
    insertions: int
    reference_length: int  # words for WER, characters for CER

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        return self.errors / self.reference_length

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_length + other.reference_length,
        )


def _normalized_pairs(refs: Sequence[str], hyps: Sequence[str]) -> tuple[list[str], list[str]]:
    if isinstance(refs, str) or isinstance(hyps, str):
        raise ValueError("wer/cer take lists of strings (one per utterance), not a single string")
    if len(refs) != len(hyps):
        raise ValueError(f"mismatched reference/hypothesis lists: {len(refs)} references, {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("wer/cer need at least one reference")
    norm_refs = [normalize_text(r) for r in refs]
    for i, (raw, ref) in enumerate(zip(refs, norm_refs)):
        if not ref:
            raise ValueError(f"reference {i} ({raw!r}) is empty after normalisation; WER is undefined")
    return norm_refs, [normalize_text(h) for h in hyps]


def word_errors(refs: Sequence[str], hyps: Sequence[str]) -> ErrorCounts:
    """Word-level edit counts summed over utterances."""
    norm_refs, norm_hyps = _normalized_pairs(refs, hyps)
    out = jiwer.process_words(norm_refs, norm_hyps)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, sum(len(r.split()) for r in norm_refs))


def char_errors(refs: Sequence[str], hyps: Sequence[str]) -> ErrorCounts:
    """Character-level edit counts (spaces included, as jiwer's CER) summed over utterances."""
    norm_refs, norm_hyps = _normalized_pairs(refs, hyps)
    out = jiwer.process_characters(norm_refs, norm_hyps)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, sum(len(r) for r in norm_refs))


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus-level word error rate (may exceed 1 with many insertions)."""
    return word_errors(refs, hyps).rate


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus-level character error rate."""
    return char_errors(refs, hyps).rate


# --------------------------------------------------------------------------------------------
# SIM, EM / F1
# --------------------------------------------------------------------------------------------


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two 1-D embeddings (SIM, study Appendix D)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"cosine needs two 1-D vectors of one size, got shapes {a.shape} and {b.shape}")
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0 or not (math.isfinite(na) and math.isfinite(nb)):
        raise ValueError(f"cosine is undefined for zero or non-finite vectors (norms {na}, {nb})")
    return float(a @ b / (na * nb))


def equal_error_rate(scores: Sequence[float], same: Sequence[bool]) -> float:
    """Speaker-verification EER: the error rate where false accepts equal false rejects.

    ``scores`` are trial similarities, ``same`` whether each trial pairs one speaker. Every
    observed score is tried as the accept threshold (accept when score >= threshold); the EER is
    the mean of FAR and FRR at the threshold where they are closest.
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of one length, got {s.shape} and {y.shape}")
    if y.all() or not y.any():
        raise ValueError("EER needs both same-speaker and different-speaker trials")
    thresholds = np.unique(s)
    far = np.array([(s[~y] >= t).mean() for t in thresholds])
    frr = np.array([(s[y] < t).mean() for t in thresholds])
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2)


_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD answer normalisation: lower case, strip punctuation, drop a/an/the, single spaces."""
    text = text.lower().translate(_PUNCT_TABLE)
    return " ".join(_ARTICLES_RE.sub(" ", text).split())


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)  # both empty -> 1, one empty -> 0
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    tp = sum(common.values())
    if tp == 0:
        return 0.0
    precision, recall = tp / len(pred_tokens), tp / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_f1(pred: str, gold: str | Sequence[str]) -> tuple[float, float]:
    """(EM, F1) of one predicted answer; with several gold aliases, the best of each is taken."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    if not golds:
        raise ValueError("exact_match_f1 needs at least one gold answer")
    p = normalize_answer(pred)
    em = max(float(p == normalize_answer(g)) for g in golds)
    f1 = max(_f1(p.split(), normalize_answer(g).split()) for g in golds)
    return em, f1


# --------------------------------------------------------------------------------------------
# Signal metrics: STOI, PESQ, RTF
# --------------------------------------------------------------------------------------------

PESQ_RATES = (8_000, 16_000)  # narrow-band / wide-band P.862


def _pair(ref: np.ndarray, deg: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate and cut both signals to the shorter length (codecs may pad the last frame)."""
    ref, deg = np.asarray(ref, dtype=np.float32), np.asarray(deg, dtype=np.float32)
    check_wav(ref, "reference audio")
    check_wav(deg, "degraded audio")
    n = min(ref.size, deg.size)
    if n < sr // 4:
        raise AudioError(f"STOI/PESQ need at least 0.25 s of audio, got {n / sr:.3f} s")
    return ref[:n], deg[:n]


def stoi(ref: np.ndarray, deg: np.ndarray, sr: int) -> float:
    """Short-time objective intelligibility in [0, 1] (pystoi; internally resampled to 10 kHz)."""
    from pystoi import stoi as _stoi

    ref, deg = _pair(ref, deg, sr)
    return float(_stoi(ref, deg, sr, extended=False))


def pesq(ref: np.ndarray, deg: np.ndarray, sr: int) -> float:
    """PESQ MOS-LQO: wide-band at 16 kHz (other rates are resampled to 16 kHz), narrow-band at 8 kHz."""
    from pesq import PesqError
    from pesq import pesq as _pesq

    ref, deg = _pair(ref, deg, sr)
    if sr not in PESQ_RATES:
        ref, deg, sr = resample(ref, sr, 16_000), resample(deg, sr, 16_000), 16_000
    try:
        return float(_pesq(sr, ref, deg, "wb" if sr == 16_000 else "nb"))
    except PesqError as err:  # e.g. no utterance detected in a silent reference
        raise AudioError(f"PESQ failed: {type(err).__name__}: {err}") from err


def rtf(seconds: float, audio_seconds: float) -> float:
    """Real-time factor: processing seconds per second of audio (< 1 is faster than real time)."""
    if not audio_seconds > 0:
        raise ValueError(f"real-time factor needs positive audio duration, got {audio_seconds}")
    if seconds < 0:
        raise ValueError(f"real-time factor needs non-negative processing time, got {seconds}")
    return seconds / audio_seconds


# --------------------------------------------------------------------------------------------
# Success rate (SR, study Appendix D)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuccessCriteria:
    """Thresholds of :func:`check_success`; defaults suit 16 kHz TTS output of the built-in corpus.

    The study counts an utterance as synthesised when the SLM produced a usable token sequence
    (Appendix D); it does not publish thresholds, so ours are written here and reported with SR.
    """

    min_seconds: float = 0.3  # shorter audio cannot hold one word
    silence_dbfs: float = -50.0  # RMS level below which a clip counts as silence
    min_seconds_per_word: float = 0.08  # faster than ~750 words/min is not speech
    max_seconds_per_word: float = 2.0  # slower than 30 words/min is babble or a run-away decoder

    def __post_init__(self) -> None:
        if self.min_seconds < 0 or not self.min_seconds_per_word < self.max_seconds_per_word:
            raise ValueError(f"inconsistent success criteria: {self}")


FailureCode = Literal["unfinished", "no_audio", "bad_audio", "silent", "duration"]


@dataclass(frozen=True)
class SuccessCheck:
    ok: bool
    code: FailureCode | None = None  # failure category (for SR breakdowns); None when ok
    reason: str | None = None  # human-readable detail; None when ok


def check_success(
    wav: np.ndarray | None,
    sample_rate: int,
    *,
    finished: bool = True,
    text: str | None = None,
    criteria: SuccessCriteria = SuccessCriteria(),
) -> SuccessCheck:
    """Decide whether one generated utterance counts as a success for SR.

    Fails, in this order, when: generation hit the length limit without an end token
    (``finished=False``); there is no audio (``wav is None``: the decoder errored or the file is
    missing); the audio is empty, non-finite or shorter than ``min_seconds``; it is silent (RMS
    below ``silence_dbfs``); or, given the reference ``text``, its duration per reference word lies
    outside [``min_seconds_per_word``, ``max_seconds_per_word``] (garbage or run-away output).
    """
    if not finished:
        return SuccessCheck(False, "unfinished", "no end token before the length limit")
    if wav is None:
        return SuccessCheck(False, "no_audio", "no audio (decoder error or missing file)")
    try:
        check_wav(np.asarray(wav), "generated audio", min_seconds=criteria.min_seconds, sample_rate=sample_rate)
    except AudioError as err:
        return SuccessCheck(False, "bad_audio", str(err))
    level = rms_db(np.asarray(wav, dtype=np.float32))
    if level < criteria.silence_dbfs:
        return SuccessCheck(False, "silent", f"silent ({level:.1f} dBFS < {criteria.silence_dbfs} dBFS)")
    n_words = len(normalize_text(text).split()) if text else 0
    if n_words:
        per_word = len(wav) / sample_rate / n_words
        if not criteria.min_seconds_per_word <= per_word <= criteria.max_seconds_per_word:
            bounds = f"[{criteria.min_seconds_per_word}, {criteria.max_seconds_per_word}]"
            return SuccessCheck(False, "duration", f"{per_word:.2f} s per reference word is outside {bounds}")
    return SuccessCheck(True)


def is_success(
    wav: np.ndarray | None,
    sample_rate: int,
    *,
    finished: bool = True,
    text: str | None = None,
    criteria: SuccessCriteria = SuccessCriteria(),
) -> bool:
    """Shorthand for ``check_success(...).ok``."""
    return check_success(wav, sample_rate, finished=finished, text=text, criteria=criteria).ok
