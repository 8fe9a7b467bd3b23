"""Fixtures for tokenizer tests: each registered design built from its ``configs/codec/tiny_<name>.yaml``."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest

from speechlm import config
from speechlm.tokenizers.registry import TokenizerConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "codec"


@functools.cache
def tiny_hf_codec_dir() -> Path:
    """A randomly initialised tiny 16 kHz EncodecModel saved like a downloaded checkpoint."""
    from transformers import EncodecConfig, EncodecModel

    folder = Path(tempfile.mkdtemp(prefix="tiny_encodec_"))
    cfg = EncodecConfig(
        sampling_rate=16_000, num_filters=4, upsampling_ratios=[8, 4], hidden_size=16,
        codebook_size=32, num_lstm_layers=1, target_bandwidths=[2.5, 7.5],
    )  # hop 32 -> 500 Hz frames, 2.5 kbps per codebook -> 3 codebooks at 7.5 kbps
    EncodecModel(cfg).save_pretrained(folder)
    return folder


def tiny_tokenizer_config(name: str) -> TokenizerConfig:
    """The ``tokenizer`` section of ``configs/codec/tiny_<name>.yaml`` (every design must ship one).

    The pretrained-codec adapter has no trainable tiny config: it gets a tiny random EnCodec folder.
    """
    from speechlm.tokenizers.train import CodecTrainConfig

    if name == "hf_codec":
        return TokenizerConfig(name="hf_codec", model={"path": str(tiny_hf_codec_dir())})

    path = CONFIG_DIR / f"tiny_{name}.yaml"
    if not path.is_file():
        pytest.fail(f"registered tokenizer {name!r} has no tiny config at {path}")
    return config.load(CodecTrainConfig, path).tokenizer
