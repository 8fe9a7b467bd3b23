"""Decoupling probes: the classifier separates what is separable, histograms are per-stream frequencies, report runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechlm.data.manifest import Corpus
from speechlm.tokenizers.probes import ProbeConfig, code_histogram, probe_views, run_probes, speaker_probe_accuracy
from speechlm.tokenizers.registry import build_tokenizer
from tests.tokenizers.conftest import tiny_tokenizer_config


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class SpectrumJudge:
    """A stand-in speaker judge: the normalised long-term magnitude spectrum."""

    sample_rate = 16000

    def embed(self, wav: np.ndarray) -> np.ndarray:
        spec = np.abs(np.fft.rfft(wav[:4096], n=256))
        return spec / (np.linalg.norm(spec) + 1e-9)


def test_probe_finds_identity_when_present_and_chance_when_absent() -> None:
    rng = np.random.default_rng(0)
    y = [f"s{i % 4}" for i in range(200)]
    centres = rng.normal(size=(4, 16)) * 3
    x = np.stack([centres[int(s[1])] for s in y]) + rng.normal(size=(200, 16))
    assert speaker_probe_accuracy(x[:120], y[:120], x[120:], y[120:]) > 0.95
    noise = rng.normal(size=(200, 16))
    assert speaker_probe_accuracy(noise[:120], y[:120], noise[120:], y[120:]) < 0.5


def test_code_histogram_is_a_frequency_per_stream() -> None:
    codes = np.array([[0, 0, 1, 3], [2, 2, 2, 2]])
    h = code_histogram(codes, (0, 1), (4, 3))
    assert h.shape == (7,)
    np.testing.assert_allclose(h, [0.5, 0.25, 0, 0.25, 0, 0, 1.0])


def test_views_follow_stream_kinds() -> None:
    tok = build_tokenizer(tiny_tokenizer_config("decoupled"))
    views = probe_views(tok)
    assert views["prosody"] == (0,) and views["content"] == (1, 2) and views["acoustic"] == (3, 4, 5)
    assert views["all_codes"] == tuple(range(6))


def test_report_on_the_tiny_corpus(tiny_corpus: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    tok = build_tokenizer(tiny_tokenizer_config("decoupled")).eval()
    cfg = ProbeConfig(train_per_speaker=4, test_per_speaker=2, vc_pairs=3, reference_utterances=1)
    report = run_probes(tok, Corpus.open(tiny_corpus), cfg, SpectrumJudge())
    assert set(report.accuracy) == {"prosody", "content", "acoustic", "stream0", "all_codes", "timbre"}
    assert all(0.0 <= a <= 1.0 for a in report.accuracy.values())
    assert report.chance == pytest.approx(1 / report.speakers)
    assert ["slt", "slt_high"] in report.twins and ["rms", "rms_deep"] in report.twins
    assert set(report.twin_accuracy) == {"prosody", "content", "acoustic", "stream0", "all_codes"}
    assert all(0.0 <= a <= 1.0 for a in report.twin_frame_accuracy.values())
    vc = report.voice_conversion
    assert vc is not None and vc.pairs == 3 and 0.0 <= vc.success_rate <= 1.0
    report.write_json(tmp_path / "probe.json")
    assert json.loads((tmp_path / "probe.json").read_text())["accuracy"]["timbre"] == report.accuracy["timbre"]


def test_frame_probe_reads_identity_from_speaker_specific_codes() -> None:
    from speechlm.data.manifest import Utterance
    from speechlm.tokenizers.probes import EncodedUtterance, frame_probe_accuracy

    rng = np.random.default_rng(0)

    def utt(i: int, speaker: int, informative: bool) -> EncodedUtterance:
        row = Utterance(id=f"u{i}", audio="x.wav", text="x", speaker=f"s{speaker}", duration=1.0, split="train")
        stream0 = rng.integers(0, 4, 20) + 4 * speaker if informative else rng.integers(0, 8, 20)
        return EncodedUtterance(row, np.stack([stream0, rng.integers(0, 8, 20)]), None)

    train = [utt(i, i % 2, True) for i in range(20)]
    test = [utt(100 + i, i % 2, True) for i in range(10)]
    assert frame_probe_accuracy(train, test, (0,), (8, 8)) == 1.0  # disjoint code sets per speaker
    assert frame_probe_accuracy(train, test, (1,), (8, 8)) < 0.7  # codes independent of the speaker


def test_twins_share_engine_and_base_voice(tiny_corpus: Path) -> None:
    from speechlm.tokenizers.probes import twin_pairs

    corpus = Corpus.open(tiny_corpus)
    pairs = twin_pairs(corpus, set(corpus.seen_speakers()))
    assert ("slt", "slt_high") in pairs and ("rms", "rms_deep") in pairs
    for plain, variant in pairs:
        a, b = corpus.speakers[plain], corpus.speakers[variant]
        assert a.engine == b.engine and b.voice.startswith(a.voice.split()[0] + " ") and " " not in a.voice
    assert twin_pairs(corpus, {"slt_high"}) == []  # a variant without its plain voice has no twin


def test_twin_probe_separates_timbre_codes_from_shared_codes() -> None:
    from speechlm.data.manifest import Utterance
    from speechlm.tokenizers.probes import EncodedUtterance, twin_probe

    rng = np.random.default_rng(0)

    def utt(i: int, speaker: str, split: str) -> EncodedUtterance:
        row = Utterance(id=f"{split}{i}", audio="x.wav", text="x", speaker=speaker, duration=1.0, split=split)
        timbre = rng.integers(0, 4, 30) + (4 if speaker == "b" else 0)  # stream 0: disjoint codes per twin
        return EncodedUtterance(row, np.stack([timbre, rng.integers(0, 8, 30)]), None)

    train = [utt(i, "ab"[i % 2], "train") for i in range(40)] + [utt(99, "c", "train")]
    test = [utt(i, "ab"[i % 2], "test") for i in range(20)]
    assert twin_probe(train, test, ("a", "b"), (0,), (8, 8)) == (1.0, 1.0)
    utterance, frame = twin_probe(train, test, ("a", "b"), (1,), (8, 8))
    assert utterance <= 0.8 and frame < 0.65  # shared codes: near chance (0.5)
