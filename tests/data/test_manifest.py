import json
from pathlib import Path

import pytest

from speechlm.data.manifest import Corpus, ManifestError, Utterance, iter_manifest, read_manifest, spread, write_manifest

TTS = Utterance("u1", "audio/u1.wav", "The red dog slept.", "slt", 1.25, "train")
QA = Utterance(
    "q1", "audio/q1.wav", "The answer is Paris.", "rms", 1.5, "test",
    question="What is the capital of France?", answer="Paris", role="Captain Reed", category="capitals", domain="in",
)


def test_round_trip_and_tts_rows_keep_the_six_shared_keys(tmp_path):
    path = write_manifest(tmp_path / "m.jsonl", [TTS, QA])
    assert read_manifest(path) == [TTS, QA]
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == ["id", "audio", "text", "speaker", "duration", "split"]
    assert not TTS.is_qa and QA.is_qa


GOOD = '{"id": "a", "audio": "a.wav", "text": "hi there you", "speaker": "slt", "duration": 1, "split": "val"}'


@pytest.mark.parametrize(
    "line, pattern, field",
    [
        ("{not json", "not valid JSON", None),
        ("[1, 2]", "expected a JSON object, got list", None),
        (GOOD.replace('"speaker": "slt", ', ""), r"missing field\(s\) \['speaker'\]", None),
        (GOOD.replace('"duration": 1', '"duration": "long"'), "field 'duration' has the wrong type", "duration"),
        (GOOD.replace('"duration": 1', '"duration": true'), "field 'duration' has the wrong type", "duration"),
        (GOOD.replace('"split": "val"', '"split": "dev"'), "split 'dev' is not one of", "split"),
        (GOOD.replace("}", ', "colour": "red"}'), r"unknown field\(s\) \['colour'\]", None),
        (GOOD.replace("}", ', "question": "why?"}'), "QA row lacks field", None),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, line, pattern, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(GOOD + "\n\n" + line + "\n")
    with pytest.raises(ManifestError, match=rf"bad\.jsonl:3: {pattern}") as err:
        read_manifest(path)
    assert err.value.field == field


def test_iter_manifest_reports_every_bad_row_and_keeps_going(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join([GOOD, "oops", GOOD.replace('"val"', '"x"'), GOOD]) + "\n")
    kinds = [(n, type(item).__name__) for n, item in iter_manifest(path)]
    assert kinds == [(1, "Utterance"), (2, "ManifestError"), (3, "ManifestError"), (4, "Utterance")]
    assert [item.uid for _, item in iter_manifest(path) if isinstance(item, ManifestError)] == [None, "a"]


def test_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_manifest(tmp_path / "nope.jsonl")


def test_corpus_open(tiny_corpus: Path):
    corpus = Corpus.open(tiny_corpus)
    assert corpus.sample_rate == 16000 and corpus.root == tiny_corpus
    assert set(corpus.unseen_speakers()) and set(corpus.seen_speakers())
    rows = corpus.tts()
    assert rows and sum(len(corpus.tts(s)) for s in ("train", "val", "test")) == len(rows)
    assert all(corpus.audio_path(r).is_file() for r in rows)
    out = corpus.qa("test", domain="out")
    assert out and all(r.domain == "out" and r.split == "test" for r in out)
    assert {r.role for r in corpus.qa()} <= set(corpus.roles)
    with pytest.raises(ValueError, match="split 'dev'"):
        corpus.tts("dev")
    with pytest.raises(ValueError, match="domain 'mid'"):
        corpus.qa(domain="mid")


def test_corpus_open_needs_corpus_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="no corpus.json"):
        Corpus.open(tmp_path)


def test_spread_keeps_every_speaker_and_the_limit():
    rows = [Utterance(id=f"{s}-{i}", audio="a.wav", text="x", speaker=s, duration=1.0, split="test") for s in "abcd" for i in range(10)]
    picked = spread(rows, 8)
    assert len(picked) == 8 and {r.speaker for r in picked} == set("abcd")
    assert picked == spread(rows, 8) and len(set(r.id for r in picked)) == 8
    assert spread(rows, 0) == rows and spread(rows, 100) == rows
    assert len(spread(rows, 13)) <= 13  # a stride never returns more than asked
