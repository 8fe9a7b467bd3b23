"""Fixtures for tokenizer tests: each registered design built from its ``configs/codec/tiny_<name>.yaml``."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechlm import config
from speechlm.tokenizers.registry import TokenizerConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "codec"


def tiny_tokenizer_config(name: str) -> TokenizerConfig:
    """The ``tokenizer`` section of ``configs/codec/tiny_<name>.yaml`` (every design must ship one)."""
    from speechlm.tokenizers.train import CodecTrainConfig

    path = CONFIG_DIR / f"tiny_{name}.yaml"
    if not path.is_file():
        pytest.fail(f"registered tokenizer {name!r} has no tiny config at {path}")
    return config.load(CodecTrainConfig, path).tokenizer
