"""Checkpoint -> Synthesizer -> audio, the batch file mode, the CLI verbs and their error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechlm.cli import main
from speechlm.inference.api import Synthesizer, fill_unmodelled
from speechlm.inference.batch import synthesize_file
from speechlm.inference.speakers import SpeakerTable


@pytest.fixture(scope="module")
def synth(checkpoint: Path) -> Synthesizer:
    return Synthesizer.load(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def speaker_synth(speaker_checkpoint: Path) -> Synthesizer:
    return Synthesizer.load(speaker_checkpoint, device="cpu")


def test_tts_decodes_generated_frames_to_audio(synth: Synthesizer):
    results = synth.tts(["Hello there.", "A somewhat longer sentence to read aloud"])
    hop = synth.codec.hop_length
    for r in results:
        assert r.sample_rate == synth.codec.sample_rate
        assert r.wav.dtype == np.float32 and len(r.wav) == r.frames * hop
        limit = synth.generation.max_frames(len(r.text), synth.codec.frame_rate)
        assert 0 <= r.frames <= limit
        assert not r.finished or r.frames > 0  # an empty generation never counts as finished
    assert results[0].text == "Hello there."


def test_tts_prompt_is_the_training_template(synth: Synthesizer):
    item = synth.prompt("tts", "Hello there.", synth.voice())
    text = synth.text.decode(list(item.ids))
    assert text == "[Human]: Read this sentence: Hello there.\n [Assistant]: The speech is: [ua]"
    assert not item.text_first and item.speaker is None


def test_ask_prompt_ends_at_the_text_answer_marker(synth: Synthesizer):
    item = synth.prompt("role_qa", "Who wrote Hamlet?", synth.voice())
    assert synth.text.decode(list(item.ids)).endswith("Question: Who wrote Hamlet?\n [Assistant]: [ta]")
    assert item.text_first
    [result] = synth.ask(["Who wrote Hamlet?"])
    assert isinstance(result.text, str)


def test_bad_text_gets_a_clear_error(synth: Synthesizer):
    with pytest.raises(ValueError, match="empty text"):
        synth.tts(["   "])
    with pytest.raises(ValueError, match="character 'é'"):
        synth.tts(["café"])
    with pytest.raises(ValueError, match="no speaker control"):
        synth.voice("alice")


def test_named_speakers_condition_the_model(speaker_synth: Synthesizer):
    a = speaker_synth.tts(["same words"], speaker_synth.voice("alice"))[0]
    b = speaker_synth.tts(["same words"], speaker_synth.voice("bob"))[0]
    assert a.speaker == "alice" and b.speaker == "bob"
    assert speaker_synth.voice().name == "alice"  # the default voice: first name in order
    assert a.frames != b.frames or not np.array_equal(a.wav, b.wav)
    with pytest.raises(ValueError, match="unknown speaker 'carol'; known speakers: alice, bob"):
        speaker_synth.voice("carol")


def test_reference_audio_errors_are_clear(speaker_synth: Synthesizer, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        speaker_synth.voice(ref=tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="not both"):
        speaker_synth.voice("alice", ref=tmp_path / "x.wav")
    wav = tmp_path / "ref.wav"
    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="no timbre encoder"):  # the tiny coupled codec has none
        speaker_synth.voice(ref=wav)


def test_speaker_table_round_trip(tmp_path: Path):
    table = SpeakerTable({"b": torch.ones(3), "a": torch.zeros(3)})
    table.save(tmp_path)
    loaded = SpeakerTable.load(tmp_path)
    assert loaded.names == ["a", "b"] and loaded.dim == 3 and torch.equal(loaded.get("b"), torch.ones(3))
    assert len(SpeakerTable.load(tmp_path / "nowhere")) == 0
    with pytest.raises(ValueError, match="one width"):
        SpeakerTable({"a": torch.zeros(3), "b": torch.zeros(4)})


def test_speaker_table_from_a_code_cache_is_the_per_speaker_mean(tmp_path: Path):
    from types import SimpleNamespace

    from speechlm.data.codes import CodeCache, UttCodes

    vec = {"u1": torch.tensor([1.0, 0.0]), "u2": torch.tensor([3.0, 2.0]), "u3": torch.tensor([0.0, 5.0])}
    items = {k: UttCodes(torch.zeros(3, 4, dtype=torch.long), v) for k, v in vec.items()}
    cache = CodeCache(tmp_path, "f" * 64, {}, items, {"train": tuple(vec)})
    rows = [SimpleNamespace(id="u1", speaker="ann"), SimpleNamespace(id="u2", speaker="ann"), SimpleNamespace(id="u3", speaker="ben")]
    corpus = SimpleNamespace(tts=lambda split: rows, qa=lambda split: [])
    table = SpeakerTable.from_code_cache(cache, corpus)
    assert table.names == ["ann", "ben"]
    assert table.get("ann").tolist() == [2.0, 1.0] and table.get("ben").tolist() == [0.0, 5.0]


def test_unmodelled_streams_are_filled_with_a_constant():
    codes = torch.tensor([[[1, 2], [3, 4]]])  # [B=1, K=2, T=2] of streams (2, 0)
    full = fill_unmodelled(codes, (2, 0), num_streams=4)
    assert full.tolist() == [[[3, 4], [0, 0], [1, 2], [0, 0]]]
    with pytest.raises(ValueError, match="models 3"):
        fill_unmodelled(codes, (0, 1, 2), num_streams=4)


def test_codecs_that_decode_stream_subsets_get_only_the_modelled_streams():
    from speechlm import config as cfglib
    from speechlm.inference.api import decode_modelled
    from speechlm.tokenizers.registry import TokenizerConfig, build_tokenizer

    root = Path(__file__).resolve().parents[2] / "configs" / "codec"
    torch.manual_seed(0)
    decoupled = build_tokenizer(cfglib.from_dict(TokenizerConfig, cfglib.read_yaml(root / "tiny_decoupled.yaml")["tokenizer"]))
    coupled = build_tokenizer(cfglib.from_dict(TokenizerConfig, cfglib.read_yaml(root / "tiny_coupled_rvq.yaml")["tokenizer"]))
    codes, lengths = torch.randint(0, 32, (2, 3, 6)), torch.tensor([6, 4])
    speaker = torch.randn(2, decoupled.speaker_dim)
    with torch.no_grad():
        got = decode_modelled(decoupled.eval(), codes, (0, 1, 2), lengths, speaker)
        want = decoupled.decode_streams(codes, (0, 1, 2), lengths, speaker)  # acoustic groups absent
        assert torch.equal(got.wav, want.wav)
        got = decode_modelled(coupled.eval(), codes[:, :2], (0, 1), lengths, None)
        want = coupled.decode(fill_unmodelled(codes[:, :2], (0, 1), 3), lengths)
        assert torch.equal(got.wav, want.wav)


def test_batch_file_writes_a_manifest_row_per_line(synth: Synthesizer, tmp_path: Path):
    texts = tmp_path / "texts.txt"
    texts.write_text("first line\n\ncafé au lait\nthe last line of the file\n")
    report = synthesize_file(synth, texts, tmp_path / "out", synth.voice(), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["00000", "00001", "00002", "00003"]
    assert [r["text"] for r in rows] == ["first line", "", "café au lait", "the last line of the file"]
    for r in rows:
        assert set(r) >= {"id", "text", "audio", "speaker", "audio_seconds", "finished"}
    assert "empty text" in rows[1]["error"] and rows[1]["audio"] is None and rows[1]["finished"] is False
    assert "'é'" in rows[2]["error"]
    for r in (rows[0], rows[3]):
        if r["audio"] is not None:
            info = sf.info(tmp_path / "out" / r["audio"])
            assert abs(info.duration - r["audio_seconds"]) < 1e-3
    assert {r["id"] for r in report.failed} >= {"00001", "00002"}


def test_cli_tts_and_ask(checkpoint: Path, tmp_path: Path, capsys):
    out = tmp_path / "hello.wav"
    rc = main(["tts", "hello", "--model", str(checkpoint), "-o", str(out), "--device", "cpu", "--threads", "1"])
    assert rc in (0, 1)  # 1 = cut at the length limit (random weights)
    assert out.is_file() or "no speech" in capsys.readouterr().err
    rc = main(["ask", "who?", "--model", str(checkpoint), "-o", str(tmp_path / "a.wav"), "--device", "cpu"])
    assert rc in (0, 1, 2)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tts", "hello", "-o", "x.wav"], "no --model given and this checkout has no shipped default model"),
        (["tts", "hello", "--model", "/nonexistent/ckpt", "-o", "x.wav"], "model not found"),
        (["tts", "--model", "m", "-o", "x.wav"], "give either a text"),
        (["tts", "hello", "--model", "m"], "needs -o"),
    ],
)
def test_cli_errors_are_one_clear_line(argv, message, capsys, monkeypatch: pytest.MonkeyPatch):
    import speechlm.assets

    monkeypatch.setattr(speechlm.assets, "default_slm", lambda: None)  # as in a checkout without the shipped model
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_unknown_speaker(speaker_checkpoint: Path, tmp_path: Path, capsys):
    argv = ["tts", "hi", "--model", str(speaker_checkpoint), "--speaker", "zed", "-o", str(tmp_path / "x.wav")]
    assert main(argv) == 2
    assert "unknown speaker 'zed'" in capsys.readouterr().err
