"""Judge adapters load local checkpoints: tiny random models saved with save_pretrained (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechlm.audio import AudioError
from speechlm.eval.judges import JudgesConfig, UtmosJudge, WavLMJudge, WhisperJudge
from speechlm.eval.judges.base import prepare_wav
from speechlm.config import ConfigError, from_dict

SR = 16_000


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    d = tmp_path_factory.mktemp("whisper")
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"]
    vocab = {t: i for i, t in enumerate([*"abcdefghijklmnopqrstuvwxyz", "Ġ", *specials])}
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    eot = vocab["<|endoftext|>"]
    tok = WhisperTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), unk_token=specials[0], bos_token=specials[0], eos_token=specials[0])
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    cfg = WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=1500, max_target_positions=32, decoder_start_token_id=vocab["<|startoftranscript|>"],
        eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config.no_timestamps_token_id = vocab["<|notimestamps|>"]
    model.save_pretrained(d)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tok).save_pretrained(d)
    return d


def test_whisper_adapter_transcribes_deterministically(tiny_whisper: Path):
    judge = WhisperJudge(tiny_whisper)
    wav = _noise(1.0, 0)
    text = judge.transcribe(wav)
    assert isinstance(text, str) and "<|" not in text  # special tokens are stripped
    assert judge.transcribe(wav) == text
    assert judge.name == f"whisper:{tiny_whisper.name}" and judge.sample_rate == SR


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory) -> Path:
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    d = tmp_path_factory.mktemp("wavlm")
    cfg = WavLMConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, tdnn_dim=(16, 16), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1),
        xvector_output_dim=8, num_buckets=16, max_bucket_distance=32,
    )
    torch.manual_seed(0)
    WavLMForXVector(cfg).save_pretrained(d)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, do_normalize=True, return_attention_mask=True).save_pretrained(d)
    return d


def test_wavlm_adapter_embeds(tiny_wavlm: Path):
    judge = WavLMJudge(tiny_wavlm)
    a, b = _noise(1.0, 1), _noise(1.0, 2)
    ea = judge.embed(a)
    assert ea.shape == (8,) and np.all(np.isfinite(ea))
    assert np.allclose(judge.embed(a), ea)
    assert judge.similarity(a, a) == pytest.approx(1.0, abs=1e-5)
    assert judge.similarity(a, b) < 1.0 - 1e-4


def test_missing_or_wrong_checkpoint_dirs(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="Whisper checkpoint directory not found"):
        WhisperJudge(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        WavLMJudge(tmp_path)


class _Mos(torch.nn.Module):
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return 1.0 + 4.0 * wav.abs().amax(dim=-1).clamp(max=1.0)  # [B]


def test_utmos_slot(tmp_path: Path):
    path = tmp_path / "utmos.pt"
    torch.jit.script(_Mos()).save(str(path))
    judge = UtmosJudge(path)
    wav = np.full(SR, 0.5, dtype=np.float32)
    assert judge.score(wav) == pytest.approx(3.0) and judge.name == "utmos"
    ckpt = tmp_path / "epoch=3-step=7459.ckpt"
    ckpt.write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="Lightning checkpoint"):
        UtmosJudge(ckpt)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        UtmosJudge(junk)
    with pytest.raises(FileNotFoundError):
        UtmosJudge(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("wav", "match"),
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros((2, 100), np.float32), "mono"),
        (np.array([0.0, np.nan] * 800, np.float32), "NaN"),
        (np.zeros(100, np.int16), "float audio"),
        (np.zeros(10, np.float32), "shorter than"),
    ],
)
def test_bad_audio_is_a_clear_error(wav: np.ndarray, match: str):
    with pytest.raises(AudioError, match=match):
        prepare_wav(wav, "judge", min_seconds=0.05)


def test_judges_config_needs_paths_for_local_models():
    with pytest.raises(ConfigError, match="set asr.path"):
        from_dict(JudgesConfig, {"asr": {"kind": "whisper"}})
    cfg = from_dict(JudgesConfig, {"asr": {"pocketsphinx": {"order": 4, "warps": [1.0]}}, "quality": {"kind": "none"}})
    assert cfg.asr.pocketsphinx.order == 4 and cfg.asr.pocketsphinx.warps == (1.0,) and cfg.quality.kind == "none"
    with pytest.raises(ConfigError, match="warps"):
        from_dict(JudgesConfig, {"asr": {"pocketsphinx": {"warps": []}}})
