"""`speechlm demo`: default-model detection, item selection, the README table; the whole job [slow]."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechlm import demo
from speechlm.data.manifest import Corpus


def test_picks_cover_seen_and_unseen_voices_and_both_qa_domains(tiny_corpus: Path):
    corpus = Corpus.open(tiny_corpus)
    plan = demo.DemoPlan(seen_voices=2, unseen_voices=2, questions=3)
    tts, qa = demo.pick_sentences(corpus, plan), demo.pick_questions(corpus, plan)
    seen = [corpus.speakers[r.speaker].seen for r in tts]
    assert seen == [True, True, False, False] and len({r.speaker for r in tts}) == 4
    assert all(r.split == "test" for r in tts + qa)
    assert [r.domain for r in qa] == ["in", "in", "out"]


def test_demo_sentences_are_not_training_sentences_of_any_seed0_corpus():
    """The shipped models train on seed-0 corpora, which hold every sentence of the seed-0 tiny corpus."""
    import random

    from speechlm.data.grammar import load_grammar
    from speechlm.data.synth import load_preset, plan_tts
    from speechlm.data.voices import load_voice_table

    table, grammar = load_voice_table(), load_grammar()

    def plan(preset: str, seed: int) -> list:
        return plan_tts(load_preset(preset), table, grammar, random.Random(f"{seed}/tts"))

    trained = {r.text for preset in ("demo", "large") for r in plan(preset, 0) if r.split != "test"}
    assert {r.text for r in plan("tiny", 0) if r.split == "test"} <= trained  # why the demo needs its own seed
    assert not {r.text for r in plan("tiny", demo.SENTENCE_SEED) if r.split == "test"} & trained


def test_readme_says_when_the_model_is_an_untrained_pipeline_check():
    item = {"kind": "tts", "text": "hi there", "speaker": "kal", "seen": True, "hypothesis": None, "wer": None,
            "sim": None, "mos": None, "rtf": 0.5, "success": False, "failure": "unfinished"}  # fmt: skip
    summary = {"success_rate": 0.0, "wer": None, "sim_seen": None, "sim_unseen": None, "mos": None, "rtf": 0.5,
               "mos_judge": "dnsmos-p808"}  # fmt: skip
    text = demo.render_readme(Path("m"), demo.UNTRAINED_NOTE.format(steps=40), {"summary": summary, "items": [item]})
    assert "UNTRAINED PIPELINE CHECK" in text and "not the shipped model" in text
    assert "| hi there | kal | yes | — | — | — | — | 0.50 | no (unfinished) |" in text
    assert "mos_judge=dnsmos-p808" in text
    assert "UNTRAINED" not in demo.render_readme(Path("m"), "", {"summary": summary, "items": [item]})


def test_readme_quotes_the_shipped_models_status_line(tmp_path: Path):
    (tmp_path / "README.md").write_text("# default\n\n**Status: undertrained; WER 100 %.** More.\n\n## Training\n")
    summary = {"success_rate": 1.0, "wer": 1.0, "sim_seen": None, "sim_unseen": None, "mos": None, "rtf": 0.1}
    text = demo.render_readme(tmp_path, "", {"summary": summary, "items": []})
    assert "> **Status: undertrained; WER 100 %.** More." in text


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(demo, "default_slm", lambda: None)
    assert demo.run_demo(tmp_path / "demo", demo.DemoPlan(seen_voices=1, unseen_voices=1, questions=1, fallback_steps=4)) == 0
    out = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert out["untrained_pipeline_check"] and len(out["items"]) == 3
    assert (tmp_path / "demo" / "spectrograms.png").is_file() and (tmp_path / "demo" / "README.md").is_file()
