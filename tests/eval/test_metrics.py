"""Metrics: normaliser, WER/CER, EM/F1, SIM, STOI/PESQ, RTF, success rule."""

from __future__ import annotations

import numpy as np
import pytest

from speechlm.audio import AudioError
from speechlm.eval.metrics import (
    SuccessCriteria,
    cer,
    check_success,
    cosine,
    exact_match_f1,
    normalize_text,
    number_to_words,
    pesq,
    rtf,
    stoi,
    wer,
    word_errors,
)

SR = 16_000


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Hello, World!", "hello world"),
        ("It's a  well-known   fact.", "it's a well known fact"),
        ("'Quoted' words", "quoted words"),
        ("I have 3 cats & 21 dogs", "i have three cats and twenty one dogs"),
        ("In 1,200 BC", "in one thousand two hundred bc"),
        ("ÉCOLE", "école"),
        ("Don\u2019t stop", "don't stop"),
    ],
)
def test_normalize_text(raw: str, norm: str):
    assert normalize_text(raw) == norm


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(105) == "one hundred five"
    assert number_to_words(2_000_019) == "two million nineteen"


def test_wer_is_corpus_level_and_normalised():
    refs = ["the cat sat", "on the mat today"]
    hyps = ["The cat SAT.", "on mat today now"]  # 0 errors + (1 deletion, 1 insertion)
    assert wer(refs, hyps) == pytest.approx(2 / 7)
    counts = word_errors(refs, hyps)
    assert (counts.deletions, counts.insertions, counts.reference_length) == (1, 1, 7)
    assert wer(["a b"], [""]) == 1.0
    assert wer(["a"], ["b c d"]) == 3.0  # insertions can push WER above 1


def test_cer():
    assert cer(["abcd"], ["abed"]) == pytest.approx(0.25)


def test_wer_bad_input_is_clear():
    with pytest.raises(ValueError, match="2 references, 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty after normalisation"):
        wer(["..."], ["a"])
    with pytest.raises(ValueError, match="lists of strings"):
        wer("a b", "a b")


def test_exact_match_f1_squad_rules():
    assert exact_match_f1("The Eiffel Tower!", "eiffel tower") == (1.0, 1.0)
    em, f1 = exact_match_f1("tower of paris", "eiffel tower")
    assert em == 0.0 and f1 == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert exact_match_f1("Paris", ["London", "paris"]) == (1.0, 1.0)
    assert exact_match_f1("", "x") == (0.0, 0.0)


def test_cosine():
    assert cosine(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == pytest.approx(1.0)
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="zero"):
        cosine(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="shapes"):
        cosine(np.ones(3), np.ones(4))


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonic tone with noise: enough structure for STOI/PESQ."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 15))
    env = 0.5 * (1 + np.sin(2 * np.pi * 3 * t)) ** 2
    return (0.1 * env * voiced + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def test_stoi_and_pesq_rank_degradations():
    ref = _speechlike()
    noisy = ref + 0.05 * np.random.default_rng(1).standard_normal(ref.size).astype(np.float32)
    assert stoi(ref, ref, SR) > 0.99 > stoi(ref, noisy, SR)
    assert pesq(ref, ref, SR) > 4.0 > pesq(ref, noisy, SR)
    # A codec that pads its last frame is compared over the common length.
    assert stoi(ref, np.concatenate([ref, np.zeros(320, np.float32)]), SR) > 0.99


def test_signal_metrics_refuse_bad_audio():
    with pytest.raises(AudioError, match="0.25 s"):
        stoi(np.ones(100, np.float32), np.ones(100, np.float32), SR)
    with pytest.raises(AudioError, match="empty"):
        pesq(np.zeros(0, np.float32), np.zeros(SR, np.float32), SR)


def test_rtf():
    assert rtf(1.0, 4.0) == 0.25
    with pytest.raises(ValueError, match="positive audio duration"):
        rtf(1.0, 0.0)


def test_success_rule():
    speech = _speechlike(2.0)
    assert check_success(speech, SR, text="five words of speech here").ok
    cases = {
        "end token": check_success(speech, SR, finished=False),
        "no audio": check_success(None, SR),
        "shorter than": check_success(speech[:1000], SR),
        "silent": check_success(np.zeros(SR, np.float32), SR),
        "per reference word": check_success(speech, SR, text=" ".join(["word"] * 40)),
    }
    for reason, result in cases.items():
        assert not result.ok and reason in result.reason and result.code is not None
    with pytest.raises(ValueError, match="inconsistent"):
        SuccessCriteria(min_seconds_per_word=3.0)


def test_equal_error_rate():
    from speechlm.eval.metrics import equal_error_rate

    assert equal_error_rate([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 0.0
    assert equal_error_rate([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 1.0
    # One impostor above one target out of two each: FAR = FRR = 0.5 at the crossing.
    assert equal_error_rate([0.9, 0.5, 0.7, 0.1], [True, True, False, False]) == 0.5
    with pytest.raises(ValueError, match="both"):
        equal_error_rate([0.1, 0.2], [True, True])
