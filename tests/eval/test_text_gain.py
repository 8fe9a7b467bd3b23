"""Text gain: teacher-forced speech NLL after the utterance's own text vs another sentence's; the ASR gain the other way."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from speechlm.cli import main
from speechlm.data.dataset import SequenceEncoder, collate
from speechlm.data.manifest import Corpus, Utterance, spread
from speechlm.data.tasks import TaskFormatter
from speechlm.eval import text_gain as tg
from speechlm.eval.model_alignment import eval_code_cache
from speechlm.train.checkpoint import load_slm


def _row(i: int, speaker: str, text: str) -> Utterance:
    return Utterance(id=f"u{i}", audio=f"u{i}.wav", text=text, speaker=speaker, duration=1.0, split="test")


def test_mismatched_texts_swap_within_a_speaker_and_never_keep_the_own_text():
    rows = [_row(0, "a", "one"), _row(1, "a", "two"), _row(2, "b", "three"), _row(3, "a", "four"), _row(4, "c", "five")]
    others = tg.mismatched_texts(rows)
    assert others == ["two", "four", "four", "one", "one"]  # a cycles through a's rows; b and c (alone) take the next row
    assert all(o != r.text for o, r in zip(others, rows))


def test_mismatched_texts_skip_a_duplicate_sentence_and_reject_degenerate_selections():
    assert tg.mismatched_texts([_row(0, "a", "same"), _row(1, "a", "same"), _row(2, "a", "other")]) == ["other", "other", "same"]
    with pytest.raises(ValueError, match="at least 2"):
        tg.mismatched_texts([_row(0, "a", "x")])
    with pytest.raises(ValueError, match="same text"):
        tg.mismatched_texts([_row(0, "a", "x"), _row(1, "b", "x")])


def test_text_gain_of_a_checkpoint(trained: Path, tiny_corpus: Path):
    loaded = load_slm(trained, device=torch.device("cpu"))
    corpus = Corpus.open(tiny_corpus)
    result = tg.text_gain(loaded, corpus, "test", limit=4, batch_size=3)  # batches of 3 and 1: ragged on purpose
    assert result.items == 4 and set(result.per_item) == {r.id for r in spread(corpus.tts("test"), 4)}
    assert result.tokens > 0 and result.matched_nll > 0 and result.mismatched_nll > 0
    assert result.gain == pytest.approx(result.mismatched_nll - result.matched_nll, abs=1e-5)
    assert len(result.gain_by_quarter) == tg.QUARTERS
    # Batching must not change a score: item by item gives the same per-item gains.
    alone = tg.text_gain(loaded, corpus, "test", limit=4, batch_size=1)
    for uid, gain in result.per_item.items():
        assert alone.per_item[uid] == pytest.approx(gain, abs=1e-4)


def test_own_text_against_itself_gains_nothing(trained: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch):
    """With the 'other' sentence set to the utterance's own, both passes are the same sequences: gain 0."""
    monkeypatch.setattr(tg, "mismatched_texts", lambda rows: [r.text for r in rows])
    result = tg.text_gain(load_slm(trained, device=torch.device("cpu")), Corpus.open(tiny_corpus), "test", limit=3)
    assert result.gain == pytest.approx(0.0, abs=1e-6)
    assert all(g == pytest.approx(0.0, abs=1e-6) for g in result.per_item.values())


def test_token_nll_matches_the_training_loss(trained: Path, tiny_corpus: Path):
    """Per-token NLLs averaged the way the training loss averages (per slot, then over slots) give its value."""
    loaded = load_slm(trained, device=torch.device("cpu"))
    corpus = Corpus.open(tiny_corpus)
    cache = eval_code_cache(loaded, corpus, "test")
    row = corpus.tts("test")[0]
    codes = cache.get(row.id)
    example = SequenceEncoder(loaded.text_tokenizer, loaded.layout).encode(
        TaskFormatter(loaded.config.data.task).format(row, "tts"), codes, codes.speaker
    )
    scores = tg.token_nll(loaded, [example])
    batch = collate([example], text_pad_id=loaded.text_tokenizer.pad_id, speech_pad_id=loaded.layout.vocab.pad_id)
    with torch.inference_mode():
        expected = float(loaded.model.eval()(batch, return_logits=False).losses["speech"])
    labels = example.speech_labels[1:][example.is_speech[1:]]  # [J,G] in the order token_nll flattens them
    slots = torch.arange(labels.shape[1]).expand_as(labels)[labels != -100]
    per_slot = torch.stack([scores.nll[slots == g].mean() for g in slots.unique()])
    assert scores.nll.numel() == int((labels != -100).sum())
    assert float(per_slot.mean()) == pytest.approx(expected, rel=1e-4)


def test_textgain_cli_writes_json(trained: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "gain.json"
    rc = main(["textgain", str(trained), "--data", str(tiny_corpus), "--limit", "3", "--json", str(out), "--device", "cpu", "--threads", "1"])
    assert rc == 0 and "text gain" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["items"] == 3 and len(report["per_item"]) == 3
    assert report["command"].startswith("speechlm textgain ") and "--limit 3" in report["command"]  # not pytest's argv
    assert report["asr"]["items"] == 3 and report["asr"]["gain"] == pytest.approx(
        report["asr"]["mismatched_nll"] - report["asr"]["matched_nll"], abs=1e-5
    )


def test_mismatched_rows_are_where_the_other_texts_come_from():
    rows = [_row(0, "a", "one"), _row(1, "a", "two"), _row(2, "b", "three"), _row(3, "a", "four"), _row(4, "c", "five")]
    assert [rows[j].text for j in tg.mismatched_rows(rows)] == tg.mismatched_texts(rows)


def test_asr_gain_of_a_checkpoint(trained: Path, tiny_corpus: Path):
    loaded = load_slm(trained, device=torch.device("cpu"))
    corpus = Corpus.open(tiny_corpus)
    result = tg.asr_gain(loaded, corpus, "test", limit=4, batch_size=3)
    assert result.items == 4 and result.tokens > 0 and result.matched_nll > 0
    assert result.gain == pytest.approx(result.mismatched_nll - result.matched_nll, abs=1e-5)
    assert 0.0 <= result.matched_accuracy <= 1.0 and 0.0 <= result.mismatched_accuracy <= 1.0
    alone = tg.asr_gain(loaded, corpus, "test", limit=4, batch_size=1)  # batching must not change a score
    assert alone.matched_nll == pytest.approx(result.matched_nll, abs=1e-4) and alone.tokens == result.tokens


def test_own_speech_against_itself_gains_nothing(trained: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tg, "mismatched_rows", lambda rows: list(range(len(rows))))
    result = tg.asr_gain(load_slm(trained, device=torch.device("cpu")), Corpus.open(tiny_corpus), "test", limit=3)
    assert result.gain == pytest.approx(0.0, abs=1e-6) and result.matched_accuracy == result.mismatched_accuracy


def test_text_token_nll_matches_the_training_text_loss(trained: Path, tiny_corpus: Path):
    loaded = load_slm(trained, device=torch.device("cpu"))
    corpus = Corpus.open(tiny_corpus)
    row = corpus.tts("test")[0]
    codes = eval_code_cache(loaded, corpus, "test").get(row.id)
    example = SequenceEncoder(loaded.text_tokenizer, loaded.layout).encode(
        TaskFormatter(loaded.config.data.task).format(row, "asr"), codes, codes.speaker
    )
    nll, _ = tg.text_token_nll(loaded, [example])
    batch = collate([example], text_pad_id=loaded.text_tokenizer.pad_id, speech_pad_id=loaded.layout.vocab.pad_id)
    with torch.inference_mode():
        expected = float(loaded.model.eval()(batch, return_logits=False).losses["text"])
    assert nll.numel() == int((example.text_labels != -100).sum()) and float(nll.mean()) == pytest.approx(expected, rel=1e-4)


def test_asr_gain_needs_a_model_trained_on_asr(trained: Path, tiny_corpus: Path):
    loaded = load_slm(trained, device=torch.device("cpu"))
    data = loaded.config.data
    tts_only = replace(loaded, config=replace(loaded.config, data=replace(data, task=replace(data.task, tasks=("tts",)))))
    with pytest.raises(ValueError, match="not trained on ASR"):
        tg.asr_gain(tts_only, Corpus.open(tiny_corpus), "test", limit=3)
