"""The offline default judges on the tiny built-in corpus (real models, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speechlm.audio import AudioError, load_audio
from speechlm.cli import main
from speechlm.data.manifest import Corpus
from speechlm.eval.calibrate import block_shuffle, reverse
from speechlm.eval.judges import AsrJudge, PocketsphinxConfig, PocketsphinxJudge, QualityJudge, SpeakerJudge
from speechlm.eval.metrics import wer


def _clips(corpus_dir: Path, engine: str = "flite", n: int = 3) -> list[tuple[str, str, np.ndarray]]:
    corpus = Corpus.open(corpus_dir)
    rows = [u for u in corpus.tts("train") if corpus.speakers[u.speaker].engine == engine]
    picked = {u.speaker: u for u in rows}  # one clip per speaker
    return [(u.speaker, u.text, load_audio(corpus.audio_path(u), 16_000).wav) for u in list(picked.values())[:n]]


@pytest.fixture(scope="module")
def domain_asr(tiny_corpus: Path) -> AsrJudge:
    # One warp factor keeps the test fast; the default three-warp judge runs in the CLI test.
    return PocketsphinxJudge(PocketsphinxConfig(warps=(1.0,)), tiny_corpus)


def test_domain_asr_reads_ground_truth_and_rejects_scrambled_audio(domain_asr: AsrJudge, tiny_corpus: Path):
    clips = _clips(tiny_corpus)
    refs = [text for _, text, _ in clips]
    assert wer(refs, [domain_asr.transcribe(w) for _, _, w in clips]) <= 0.2
    rng = np.random.default_rng(0)
    assert wer(refs, [domain_asr.transcribe(reverse(w)) for _, _, w in clips]) >= 0.6
    assert wer(refs, [domain_asr.transcribe(block_shuffle(w, 1600, rng)) for _, _, w in clips]) >= 0.6
    assert domain_asr.name == "pocketsphinx-domain2-grammar-map" and domain_asr.sample_rate == 16_000


def test_a_clip_is_judged_the_same_whatever_was_judged_before(domain_asr: AsrJudge, tiny_corpus: Path):
    (_, _, first), (_, _, other), *_ = _clips(tiny_corpus, engine="espeak") + _clips(tiny_corpus)
    before = domain_asr.decode(first), domain_asr._decoders[0].hyp().score
    domain_asr.decode(other)
    after = domain_asr.decode(first), domain_asr._decoders[0].hyp().score
    assert after == before  # the same transcript and the same acoustic score


def test_silence_transcribes_to_nothing_and_empty_audio_is_an_error(domain_asr: AsrJudge):
    assert domain_asr.transcribe(np.zeros(16_000, np.float32)) == ""
    with pytest.raises(AudioError, match="empty"):
        domain_asr.transcribe(np.zeros(0, np.float32))


def test_general_english_mode(tiny_corpus: Path):
    judge = PocketsphinxJudge(PocketsphinxConfig(lm="general", warps=(1.0,)))
    _, text, wav = _clips(tiny_corpus, n=1)[0]
    assert judge.name == "pocketsphinx-general-map"
    assert wer([text], [judge.transcribe(wav)]) < 0.8


def test_domain_lm_needs_the_corpus_grammar(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="speechlm data synth"):
        PocketsphinxJudge(PocketsphinxConfig(), tmp_path)
    with pytest.raises(ValueError, match="needs a corpus directory"):
        PocketsphinxJudge(PocketsphinxConfig(lm="domain"), None)


def test_cli_judge_asr_writes_json_and_reports_bad_files(tiny_corpus: Path, tmp_path: Path, capsys):
    corpus = Corpus.open(tiny_corpus)
    utt = corpus.tts("train")[0]
    out = tmp_path / "asr.json"
    rc = main(["judge", "asr", str(corpus.audio_path(utt)), str(tmp_path / "missing.wav"), "--corpus", str(tiny_corpus), "--json", str(out)])
    result = json.loads(out.read_text())
    assert rc == 1  # one file could not be judged
    assert result["judge"] == "pocketsphinx-domain2-vtln-grammar-map"
    assert wer([utt.text], [result["items"][0]["text"]]) <= 0.5
    assert "not found" in result["items"][1]["error"]


@pytest.mark.slow
def test_speaker_and_quality_judges(tiny_corpus: Path):
    speaker, quality = SpeakerJudge.default(), QualityJudge.default()
    corpus = Corpus.open(tiny_corpus)
    by_speaker: dict[str, list[np.ndarray]] = {}
    for u in corpus.tts("train"):
        if u.speaker in ("rms", "slt"):
            by_speaker.setdefault(u.speaker, []).append(load_audio(corpus.audio_path(u), 16_000).wav)
    (r1, r2), (s1, _) = by_speaker["rms"][:2], by_speaker["slt"][:2]
    assert speaker.similarity(r1, r2) > speaker.similarity(r1, s1) + 0.1
    assert speaker.embed(r1).shape == (256,)
    with pytest.raises(AudioError, match="speech"):
        speaker.embed(np.zeros(16_000, np.float32))
    mos = quality.score(r1)
    assert 1.0 <= mos <= 5.0 and quality.name == "dnsmos-p808"
    noisy = r1 + 0.3 * np.random.default_rng(0).standard_normal(r1.size).astype(np.float32)
    assert quality.score(np.clip(noisy, -1, 1)) < mos


@pytest.mark.slow
def test_calibrate_command_on_tiny_corpus(tiny_corpus: Path, tmp_path: Path):
    out = tmp_path / "cal.json"
    args = ["--split", "train", "max_per_speaker=2", "judges.quality.kind=none", "general_asr=false"]
    rc = main(["judge", "calibrate", "--corpus", str(tiny_corpus), "--json", str(out), *args])
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert rc == 0 and summary["n_clips"] == 2 * len(result["speakers"]) and summary["mos_judge"] is None
    assert summary["wer_clean_real"] < 0.3 and summary["wer_reversed_all"] >= 0.8 and summary["wer_shuffled_all"] >= 0.8
    assert summary["sim_gap"] > 0.15 and summary["checks"]["sim_gap_ok"] is True


def test_vtln_warp_search_helps_f0_shifted_voices(tiny_corpus: Path, domain_asr: AsrJudge):
    corpus = Corpus.open(tiny_corpus)
    rows = [u for u in corpus.tts("train") if u.speaker in ("rms_deep", "slt_high")][:4]
    refs = [u.text for u in rows]
    wavs = [load_audio(corpus.audio_path(u), 16_000).wav for u in rows]
    vtln = PocketsphinxJudge(PocketsphinxConfig(), tiny_corpus)  # default warps (0.8, 1.0, 1.3)
    assert vtln.name == "pocketsphinx-domain2-vtln-grammar-map"
    assert wer(refs, [vtln.transcribe(w) for w in wavs]) <= wer(refs, [domain_asr.transcribe(w) for w in wavs])
