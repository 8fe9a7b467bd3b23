"""The pocketsphinx judge's grammar test: a grammatical N-best sentence wins only when the audio supports it."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from speechlm.audio import load_audio
from speechlm.config import from_dict
from speechlm.data.manifest import Corpus
from speechlm.eval.calibrate import block_shuffle, reverse
from speechlm.eval.judges import AsrConfig
from speechlm.eval.judges.asr import PocketsphinxConfig, PocketsphinxJudge, build_domain_lm
from speechlm.eval.metrics import wer

LOG_BASE = 1.0001  # pocketsphinx's default log base


@pytest.fixture(scope="module")
def judge(tiny_corpus: Path) -> PocketsphinxJudge:
    return PocketsphinxJudge(PocketsphinxConfig(warps=(1.0,)), tiny_corpus)


def _flite_clips(corpus_dir: Path, n: int = 3) -> list[tuple[str, np.ndarray]]:
    corpus = Corpus.open(corpus_dir)
    picked = {u.speaker: u for u in corpus.tts("train") if corpus.speakers[u.speaker].engine == "flite"}
    return [(u.text, load_audio(corpus.audio_path(u), 16_000).wav) for u in list(picked.values())[:n]]


def test_grammar_sentence_is_accepted_on_clean_audio_and_rejected_on_scrambled(judge: PocketsphinxJudge, tiny_corpus: Path):
    clips = _flite_clips(tiny_corpus)
    refs = [text for text, _ in clips]
    clean = [judge.decode(wav) for _, wav in clips]
    assert sum(r.grammar_accepted for r in clean) >= len(clips) - 1
    assert wer(refs, [r.text for r in clean]) <= 0.2
    rng = np.random.default_rng(0)
    for scramble in (reverse, lambda w: block_shuffle(w, 1600, rng)):
        results = [judge.decode(scramble(wav)) for _, wav in clips]
        assert not any(r.grammar_accepted for r in results)
        assert all(r.text == r.ngram_text for r in results)  # rejected: the n-gram hypothesis stands
        assert wer(refs, [r.text for r in results]) >= 0.6


@dataclass
class _Hyp:
    hypstr: str
    score: float  # a probability, as pocketsphinx's Python API reports path scores


class _LogMath:
    def log(self, p: float) -> int:
        return round(math.log(p) / math.log(LOG_BASE))


class _FakeDecoder:
    """An N-best list with given per-frame score gaps below the top entry, over 100 frames (text None: an
    entry pocketsphinx yields as None)."""

    def __init__(self, entries: list[tuple[str | None, float]]) -> None:
        self.entries = entries

    def n_frames(self) -> int:
        return 100

    def get_logmath(self) -> _LogMath:
        return _LogMath()

    def nbest(self):
        top = -20_000  # log units
        return iter(
            None if text is None else _Hyp(f"<s> {text} </s>", LOG_BASE ** (top - gap * 100)) for text, gap in self.entries
        )


def test_the_first_grammatical_entry_within_the_margin_wins(judge: PocketsphinxJudge):
    sentence = "please wash the dog"  # <sentence> = please <imp> <np>
    ungrammatical = "dog the wash please"
    margin = judge.cfg.grammar_margin
    pick = judge._grammar_sentence
    found = pick(_FakeDecoder([(ungrammatical, 0.0), (sentence, 0.5 * margin)]))
    assert found is not None and found[0] == sentence and found[1] == pytest.approx(0.5 * margin, abs=0.02)
    assert pick(_FakeDecoder([(ungrammatical, 0.0), (sentence, 2.0 * margin)])) is None  # too far below the top
    assert pick(_FakeDecoder([(ungrammatical, 0.0)] * judge.cfg.grammar_nbest + [(sentence, 0.0)])) is None  # past N
    # pocketsphinx's N-best iterator can yield None (seen on a generated clip): skipped, not a crash
    found = pick(_FakeDecoder([(None, 0.0), (ungrammatical, 0.0), (None, 0.0), (sentence, 0.5 * margin)]))
    assert found is not None and found[0] == sentence


def test_grammar_test_off_and_name(tiny_corpus: Path, judge: PocketsphinxJudge):
    assert judge.uses_grammar and judge.name == "pocketsphinx-domain2-grammar-map"
    plain = PocketsphinxJudge(PocketsphinxConfig(warps=(1.0,), grammar_nbest=0), tiny_corpus)
    assert not plain.uses_grammar and plain.name == "pocketsphinx-domain2-map"
    general = PocketsphinxJudge(PocketsphinxConfig(lm="general", warps=(1.0,)))
    assert not general.uses_grammar  # the grammar belongs to the domain LM


def _trigrams(line: str) -> list[str]:
    words = line.split()
    return [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]


def _arpa_ngrams(text: str) -> set[str]:
    """The word strings of an ARPA file's n-gram lines ("logp<TAB>w1 w2 w3[<TAB>backoff]")."""
    return {fields[1] for line in text.splitlines() if len(fields := line.split("\t")) >= 2}


def test_lm_exclude_leaves_the_sentences_out_of_the_lm(tiny_corpus: Path, tmp_path: Path):
    lines = [ln for ln in (tiny_corpus / "grammar" / "lm_text.txt").read_text().splitlines() if ln.strip()]
    counts = Counter(t for ln in lines for t in _trigrams(ln))
    line, unique = next((ln, t) for ln in lines for t in _trigrams(ln) if counts[t] == 1)
    cfg = PocketsphinxConfig(order=3)
    kept = _arpa_ngrams(build_domain_lm(tiny_corpus, cfg, tmp_path / "all.lm").read_text())
    # Written as a manifest would hold it: capitalised, with a full stop.
    held = _arpa_ngrams(build_domain_lm(tiny_corpus, cfg, tmp_path / "held.lm", exclude=[line.capitalize() + "."]).read_text())
    assert unique in kept and unique not in held


@pytest.mark.parametrize(
    ("overrides", "match"),
    [({"grammar_nbest": -1}, "grammar_nbest"), ({"grammar_margin": -0.5}, "grammar_margin"), ({"warps": []}, "warps")],
)
def test_bad_pocketsphinx_settings_are_clear_errors(overrides: dict, match: str):
    with pytest.raises(ValueError, match=match):
        from_dict(AsrConfig, {"kind": "pocketsphinx", "pocketsphinx": overrides})
