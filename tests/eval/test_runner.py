"""Evaluation runner: bad items are counted as failures, absent figures are null, figures add up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speechlm.audio import save_audio
from speechlm.eval.judges import AsrJudge, Judges, QualityJudge, SpeakerJudge
from speechlm.eval.report import summary_table
from speechlm.eval.runner import evaluate_manifest, read_rows

SR = 16_000


class EchoAsr(AsrJudge):
    """Transcribes a clip as the text stored beside it in ``texts`` (keyed by length)."""

    name = "echo-asr"

    def __init__(self, texts: dict[int, str]) -> None:
        self.texts = texts

    def transcribe(self, wav: np.ndarray) -> str:
        return self.texts.get(len(wav), "")


class BandSpeaker(SpeakerJudge):
    name = "band-energy"

    def embed(self, wav: np.ndarray) -> np.ndarray:
        spec = np.abs(np.fft.rfft(wav))
        hz = np.fft.rfftfreq(len(wav), 1 / SR)
        # Energy in 50 Hz bands up to 1 kHz: tones 200 and 210 Hz share a band, 300 Hz does not.
        return np.array([spec[(hz >= lo) & (hz < lo + 50)].sum() for lo in range(0, 1000, 50)], dtype=np.float32)


class ConstantMos(QualityJudge):
    name = "constant-mos"

    def score(self, wav: np.ndarray) -> float:
        return 3.5


def _tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture()
def manifest(tmp_path: Path) -> tuple[Path, Judges]:
    a, b, ref = _tone(2.0, 200), _tone(2.5, 300), _tone(1.5, 210)
    for name, wav in {"a": a, "b": b, "ref": ref, "quiet": np.zeros(SR, np.float32), "short": a[:800]}.items():
        save_audio(tmp_path / f"{name}.wav", wav, SR)
    (tmp_path / "broken.wav").write_bytes(b"RIFF-not-really")
    rows = [
        {"id": "a", "audio": "a.wav", "text": "the cat sat down", "ref_audio": "ref.wav", "seen": True, "seconds": 1.0},
        {"id": "b", "audio": "b.wav", "text": "a dog ran home fast", "ref_audio": "ref.wav", "seen": False, "seconds": 0.5,
         "pred_answer": "The Paris", "gold_answer": ["paris"], "audio_seconds": 2.5},
        {"id": "missing", "audio": "nope.wav", "text": "gone", "seen": True},
        {"id": "quiet", "audio": "quiet.wav", "text": "nothing here"},
        {"id": "short", "audio": "short.wav", "text": "too short"},
        {"id": "broken", "audio": "broken.wav", "text": "corrupt file"},
        {"id": "runaway", "audio": "a.wav", "text": "the cat sat down", "finished": False,
         "pred_answer": "london", "gold_answer": "paris"},
    ]
    path = tmp_path / "gen.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    asr = EchoAsr({len(a): "the cat sat", len(b): "a dog ran home fast"})
    return path, Judges(asr=asr, speaker=BandSpeaker(), quality=ConstantMos())


def test_runner_counts_bad_items_as_failures(manifest):
    path, judges = manifest
    result = evaluate_manifest(path, judges, progress=False)
    s = result.summary
    assert s["n_items"] == 7 and s["n_success"] == 2 and s["success_rate"] == pytest.approx(2 / 7)
    assert s["failures"] == {"bad_audio": 1, "no_audio": 1, "silent": 1, "unfinished": 1, "unreadable": 1}
    items = {it["id"]: it for it in result.items}
    assert items["missing"]["failure"] == "no_audio" and "not found" in items["missing"]["failure_reason"]
    assert items["broken"]["failure"] == "unreadable"
    assert items["b"]["audio_seconds"] == 2.5  # extra manifest keys are carried through


def test_runner_figures(manifest):
    path, judges = manifest
    s = evaluate_manifest(path, judges, progress=False).summary
    assert s["wer"] == pytest.approx(1 / 9)  # one deletion over 4 + 5 reference words
    assert s["mos"] == 3.5 and s["mos_judge"] == "constant-mos" and s["asr_judge"] == "echo-asr"
    assert s["sim_seen"] is not None and s["sim_unseen"] is not None and s["sim_seen"] > s["sim_unseen"]
    assert s["rtf"] == pytest.approx(1.5 / 4.5)
    assert s["em"] == pytest.approx(0.5) and s["f1"] == pytest.approx(0.5)  # EM/F1 need no audio
    assert "success_rate" in summary_table(s)


def test_absent_figures_are_null(manifest, tmp_path: Path):
    path, _ = manifest
    s = evaluate_manifest(path, Judges(asr=None, speaker=None, quality=None), progress=False).summary
    assert s["wer"] is None and s["sim_seen"] is None and s["mos"] is None and s["mos_judge"] is None
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text(json.dumps({"id": "x", "audio": "nope.wav", "text": "t"}) + "\n")
    s = evaluate_manifest(only_bad, Judges(asr=None, speaker=None, quality=None), progress=False).summary
    assert s["success_rate"] == 0.0 and s["rtf"] is None and s["em"] is None


def test_judge_errors_are_recorded_not_raised(manifest):
    class Failing(SpeakerJudge):
        name = "failing"

        def embed(self, wav):
            raise ValueError("no speech found")

    path, judges = manifest
    result = evaluate_manifest(path, Judges(asr=judges.asr, speaker=Failing(), quality=None), progress=False)
    assert result.summary["n_judge_errors"] == 2 and result.summary["sim_seen"] is None
    assert result.items[0]["errors"]["sim"] == "no speech found"


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"text": "x"}', "missing or empty 'id'"),
        ('{"id": "a"}', "'text'"),
        ('{"id": "a", "text": "x", "seen": "yes"}', "'seen' must be bool"),
        ('{"id": "a", "text": "x", "seconds": true}', "'seconds' must be"),
        ("not json", "not valid JSON"),
    ],
)
def test_malformed_manifest_lines_name_the_line(tmp_path: Path, line: str, match: str):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "ok", "text": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError, match=match) as err:
        read_rows(path)
    assert "m.jsonl:2" in str(err.value)


def test_duplicate_ids_and_missing_manifest(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        read_rows(path)
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_rows(tmp_path / "none.jsonl")


def test_speaker_rank_is_one_only_when_the_requested_speaker_is_closest(tmp_path: Path):
    clips = {"low": _tone(2.0, 200), "high": _tone(2.0, 300), "low_ref": _tone(1.5, 210), "high_ref": _tone(1.5, 310)}
    for name, wav in clips.items():
        save_audio(tmp_path / f"{name}.wav", wav, SR)
    rows = [  # "wrong" asks for the low speaker but sounds like the high one
        {"id": "right", "audio": "low.wav", "text": "x", "ref_audio": "low_ref.wav", "speaker": "lo", "seen": True},
        {"id": "also", "audio": "high.wav", "text": "x", "ref_audio": "high_ref.wav", "speaker": "hi", "seen": True},
        {"id": "wrong", "audio": "high.wav", "text": "x", "ref_audio": "low_ref.wav", "speaker": "lo", "seen": True},
    ]
    path = tmp_path / "gen.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = evaluate_manifest(path, Judges(asr=None, speaker=BandSpeaker(), quality=None), progress=False)
    ranks = {it["id"]: it["speaker_rank"] for it in result.items}
    assert ranks == {"right": 1, "also": 1, "wrong": 2}
    assert result.summary["speaker_top1_seen"] == pytest.approx(2 / 3)
    assert result.summary["speaker_top1_unseen"] is None
