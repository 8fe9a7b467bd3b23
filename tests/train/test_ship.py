"""`speechlm ship`: a shipped SLM is small (fp16), self-contained (voices, card) and tied to its codec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from speechlm.inference.speakers import SpeakerTable
from speechlm import config as cfglib
from speechlm.tokenizers.registry import TokenizerConfig, build_tokenizer, save_tokenizer
from speechlm.train.checkpoint import load_slm
from speechlm.train.ship import ship_model, shipped_size
from tests.inference.conftest import CODEC_YAML, write_checkpoint


def _codec_folder(tmp_path: Path, seed: int) -> Path:
    """The tiny codec of ``write_checkpoint`` (random init, seed 0) saved as a trained-codec folder."""
    data = cfglib.read_yaml(CODEC_YAML)
    torch.manual_seed(seed)
    tok = build_tokenizer(cfglib.from_dict(TokenizerConfig, data.get("tokenizer", data), source=str(CODEC_YAML)))
    return save_tokenizer(tok.eval(), tmp_path / f"codec_{seed}")


def test_ship_writes_fp16_weights_voices_and_a_card(tmp_path: Path):
    ckpt = write_checkpoint(tmp_path / "run" / "step_000001", speaker_dim=8)
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(json.dumps({"summary": {"wer": 0.05, "success_rate": 1.0, "split": "test"}, "items": [1, 2]}))
    out = ship_model(ckpt, tmp_path / "default", codec=_codec_folder(tmp_path, 0), eval_json=eval_json, note="hello")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    assert not (out / "trainer_state.pt").exists() and shipped_size(out) < shipped_size(ckpt)
    assert SpeakerTable.load(out).names == ["alice", "bob"]
    card = (out / "README.md").read_text()
    assert "| WER (ASR judge) | 5.0% |" in card and "hello" in card
    assert "items" not in json.loads((out / "eval.json").read_text())
    shipped, original = load_slm(out), load_slm(ckpt)
    for (name, a), (_, b) in zip(shipped.model.state_dict().items(), original.model.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b.half().to(b.dtype)), name


def test_ship_refuses_a_codec_the_model_was_not_trained_on(tmp_path: Path):
    ckpt = write_checkpoint(tmp_path / "run" / "step_000001")
    with pytest.raises(ValueError, match="not the speech tokenizer"):
        ship_model(ckpt, tmp_path / "default", codec=_codec_folder(tmp_path, 1))
    with pytest.raises(ValueError, match="random-init tokenizer"):
        ship_model(ckpt, tmp_path / "default")
    assert not (tmp_path / "default").exists()
