"""`speechlm codec encode/decode` on wav files, and the code-file formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechlm.cli import main
from speechlm.tokenizers.files import read_codes
from speechlm.tokenizers.registry import build_tokenizer, save_tokenizer
from tests.tokenizers.conftest import tiny_tokenizer_config


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_tokenizer(build_tokenizer(tiny_tokenizer_config("coupled_rvq")), tmp_path_factory.mktemp("ckpt"))


@pytest.mark.parametrize("fmt", ["npy", "safetensors"])
def test_encode_then_decode_files(ckpt: Path, tmp_path: Path, fmt: str) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, 0.1 * np.random.default_rng(0).standard_normal(22_050).astype(np.float32), 22_050)  # 1 s, resampled
    assert main(["codec", "encode", str(ckpt), str(wav), "--out-dir", str(tmp_path / "codes"), "--format", fmt]) == 0
    codes, speaker = read_codes(tmp_path / "codes" / f"a.{fmt}")
    assert codes.shape == (3, 50) and codes.dtype == torch.int64 and speaker is None
    assert main(["codec", "decode", str(ckpt), str(tmp_path / "codes" / f"a.{fmt}"), "--out-dir", str(tmp_path)]) == 0
    audio, sr = sf.read(tmp_path / "a.wav")
    assert sr == 16_000 and len(audio) == 50 * 320


def test_bad_code_files_are_refused(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    np.save(tmp_path / "bad.npy", np.full((3, 10), 999, dtype=np.int64))
    assert main(["codec", "decode", str(ckpt), str(tmp_path / "bad.npy"), "--out-dir", str(tmp_path)]) == 2
    assert "outside its codebook" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"\.safetensors or \.npy"):
        read_codes(tmp_path / "codes.txt")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        read_codes(tmp_path / "missing.npy")


def test_shipped_checkpoint_is_fp16_of_the_trained_weights_with_a_card(ckpt: Path, tmp_path: Path) -> None:
    from speechlm.tokenizers.checkpoint import ship_checkpoint
    from speechlm.tokenizers.registry import load_tokenizer

    shipped = ship_checkpoint(ckpt, tmp_path / "shipped")
    original, again = load_tokenizer(ckpt), load_tokenizer(shipped)
    for (name, a), (_, b) in zip(original.state_dict().items(), again.state_dict().items()):
        expected = a.half().to(a.dtype) if a.is_floating_point() else a
        assert torch.equal(expected, b), name
    assert (shipped / "model.safetensors").stat().st_size < 0.6 * (ckpt / "model.safetensors").stat().st_size
    assert "coupled_rvq" in (shipped / "README.md").read_text()
