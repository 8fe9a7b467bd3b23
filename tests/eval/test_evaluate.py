"""Model evaluation: generation on a corpus split, scoring through the runner, voices, alignment of a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechlm.data.manifest import Corpus
from speechlm.eval.evaluate import GeneratedItem, VoiceBank, generate_split, no_judges, score_items, select_rows
from speechlm.eval.judges import Judges
from speechlm.eval.model_alignment import align_checkpoint, resolve_layers
from speechlm.inference.api import Synthesizer
from speechlm.inference.generate import GenerationConfig

SR = 16_000


@pytest.fixture(scope="module")
def synth(trained: Path) -> Synthesizer:
    # A short length rule: an untrained model rarely emits END, so each item stops at ~0.6 s.
    return Synthesizer.load(trained, device="cpu", generation=GenerationConfig(seconds_per_char=0.0, extra_seconds=0.6))


class FakeAsr:
    name = "fake-asr"

    def __init__(self, transcripts: dict[int, str]) -> None:
        self.transcripts = transcripts  # keyed by the clip's length in samples

    def transcribe(self, wav: np.ndarray) -> str:
        return self.transcripts[len(wav)]


class FakeSpeaker:
    """Embeds a clip as [mean, 1]: two clips of one level have cosine 1."""

    name = "fake-spk"

    def embed(self, wav: np.ndarray) -> np.ndarray:
        return np.array([float(np.abs(wav).mean()), 0.01])


class FakeQuality:
    name = "fake-mos"

    def score(self, wav: np.ndarray) -> float:
        return 3.0 + len(wav) / SR


def _tone(path: Path, seconds: float, amp: float = 0.3) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    return path


def _item(tmp: Path, uid: str, seconds: float, **kw) -> GeneratedItem:
    audio = _tone(tmp / f"{uid}.wav", seconds) if seconds else None
    ref = _tone(tmp / f"{uid}-ref.wav", 1.0)
    fields = dict(id=uid, kind="tts", audio=audio.name if audio else None, reference_text="one two three",
                  reference_audio=str(ref), speaker="s", seen=True, finished=True, seconds=0.5,
                  audio_seconds=seconds)  # fmt: skip
    return GeneratedItem(**{**fields, **kw})


def test_score_items_summary_follows_the_study_definitions(tmp_path: Path):
    items = [
        _item(tmp_path, "a", 1.0),
        _item(tmp_path, "b", 1.5, seen=False),
        _item(tmp_path, "c", 1.0, finished=False),  # cut at the length limit: a failure, never judged
        _item(tmp_path, "d", 0.0),  # no speech frame at all
    ]
    asr = FakeAsr({SR: "one two three", int(1.5 * SR): "one two four"})
    report = score_items(items, tmp_path, Judges(asr=asr, speaker=FakeSpeaker(), quality=FakeQuality()), progress=False)
    s = report["summary"]
    assert s["success_rate"] == pytest.approx(0.5)
    assert s["wer"] == pytest.approx(1 / 6)  # corpus-level over the two successes: 1 error in 6 words
    assert s["sim_seen"] == pytest.approx(1.0) and s["sim_unseen"] == pytest.approx(1.0)
    assert s["mos"] == pytest.approx(np.mean([4.0, 4.5]))
    assert s["mos_judge"] == "fake-mos"
    assert s["rtf"] == pytest.approx(1.5 / 3.5)  # generation seconds over generated audio seconds
    assert "em" not in s and "f1" not in s  # QA keys only for QA data
    failed = {it["id"]: it for it in report["items"] if not it["success"]}
    assert set(failed) == {"c", "d"} and failed["c"]["hypothesis"] is None


def test_absent_figures_are_null_not_zero(tmp_path: Path):
    report = score_items([_item(tmp_path, "a", 1.0)], tmp_path, no_judges(), progress=False)
    s = report["summary"]
    assert s["success_rate"] == 1.0
    assert s["wer"] is None and s["sim_seen"] is None and s["sim_unseen"] is None and s["mos"] is None


def test_qa_items_get_em_f1_per_domain(tmp_path: Path):
    qa = dict(kind="qa", question="q?", gold="paris")
    items = [
        _item(tmp_path, "in1", 1.0, predicted="Paris", domain="in", **qa),
        _item(tmp_path, "in2", 1.0, predicted="rome", domain="in", **qa),
        _item(tmp_path, "out1", 1.0, predicted="the paris", domain="out", **qa),
    ]
    s = score_items(items, tmp_path, no_judges(), progress=False)["summary"]
    assert s["em_in"] == pytest.approx(0.5) and s["em_out"] == pytest.approx(1.0)
    assert s["em"] == pytest.approx(2 / 3) and s["f1_in"] == pytest.approx(0.5)


def test_select_rows_rejects_unknown_kinds_and_empty_splits(tiny_corpus: Path):
    corpus = Corpus.open(tiny_corpus)
    with pytest.raises(ValueError, match="unknown evaluation kind"):
        select_rows(corpus, "test", ("asr",))
    assert len(select_rows(corpus, "test", ("tts",), limit=2)["tts"]) == 2
    some = select_rows(corpus, "test", ("tts",), limit=5)["tts"]
    assert len({r.speaker for r in some}) == 5  # an even stride reaches every speaker, not the first one's rows
    assert [r.domain for r in select_rows(corpus, "test", ("qa",), limit=2)["qa"]] == ["in", "in", "out", "out"]
    with pytest.raises(ValueError, match="split"):
        select_rows(corpus, "dev")


def test_generate_split_writes_audio_and_marks_seen_voices(synth: Synthesizer, tiny_corpus: Path, tmp_path: Path):
    corpus = Corpus.open(tiny_corpus)
    unseen = set(corpus.unseen_speakers())
    tts = [r for r in corpus.tts("test") if r.speaker in unseen][:1] + [r for r in corpus.tts("test") if r.speaker not in unseen][:1]
    qa = corpus.qa("test")[:1]
    items = generate_split(synth, corpus, {"tts": tts, "qa": qa}, tmp_path, progress=False)
    assert [i.id for i in items] == [r.id for r in [*tts, *qa]]  # input order, whatever the voice grouping
    assert [i.seen for i in items[:2]] == [False, True]
    for item in items:
        assert item.audio is None or (tmp_path / item.audio).is_file()
        assert item.seconds > 0 and Path(item.reference_audio).is_file()
    assert items[2].kind == "qa" and items[2].predicted is not None and items[2].reference_text == items[2].predicted


def test_unseen_voice_never_uses_its_own_reference(synth: Synthesizer, tiny_corpus: Path):
    corpus = Corpus.open(tiny_corpus)
    bank = VoiceBank(synth, corpus)
    name = corpus.unseen_speakers()[0]
    rows = [r for r in [*corpus.tts(), *corpus.qa()] if r.speaker == name]  # every recording of the voice
    assert len(rows) >= 3
    voice = bank.voice(name, exclude={rows[0].id, rows[1].id})  # a batch of two rows of this voice
    others = torch.stack([synth.reference_vector(corpus.audio_path(r)) for r in rows[2:]]).mean(0)
    assert torch.allclose(voice.vector, others, atol=1e-5)
    assert bank.voice(name, exclude={r.id for r in rows}) is None  # nothing left to take the voice from
    seen_row = next(r for r in corpus.tts("test") if corpus.speakers[r.speaker].seen)
    train_rows = [r for r in [*corpus.tts("train"), *corpus.qa("train")] if r.speaker == seen_row.speaker]
    expected = torch.stack([synth.reference_vector(corpus.audio_path(r)) for r in train_rows]).mean(0)
    assert torch.allclose(bank.voice(seen_row.speaker, exclude={seen_row.id}).vector, expected, atol=1e-5)  # speaker_mean


def test_alignment_of_a_checkpoint(trained: Path, tiny_corpus: Path, tmp_path: Path):
    report = align_checkpoint(trained, tiny_corpus, split="test", layers=[0, -1], limit=4, device="cpu")
    assert report["group_size"] == 12 and set(report["layers"]) == {"0", "2"}
    for m in report["layers"].values():
        assert m["n_text"] > 0 and m["n_speech"] > 0
        assert -1.0 <= m["st_sim"] <= 1.0 and m["riemannian"] >= 0.0
    json.dumps(report)  # serialisable as written by `speechlm align`


def test_resolve_layers_counts_from_the_end_and_rejects_missing_layers():
    assert resolve_layers(None, 4) == (0, 2, 4)
    assert resolve_layers([-1, 0, 4], 4) == (4, 0)
    with pytest.raises(ValueError, match="do not exist"):
        resolve_layers([5], 4)


def test_a_voice_with_no_other_recording_is_generated_one_row_at_a_time(tiny_corpus: Path):
    from speechlm.eval.evaluate import _voice_batches
    from speechlm.inference.api import Voice

    class TwoRecordings:  # the voice's only recordings are the two rows being generated
        def voice(self, speaker: str, exclude=()) -> Voice | None:
            left = {"a", "b"} - set(exclude)
            return Voice(speaker, torch.tensor([float(len(left))])) if left else None

    rows = [r for r in Corpus.open(tiny_corpus).tts("test")][:1]
    a, b = (rows[0].__class__(**{**rows[0].__dict__, "id": uid}) for uid in ("a", "b"))
    batches = list(_voice_batches(TwoRecordings(), "tts", [a, b], batch_size=8))
    assert [[r.id for r in chunk] for chunk, _ in batches] == [["a"], ["b"]]  # each from the other's recording
