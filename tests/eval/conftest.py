"""Fixtures shared by the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechlm.train.config import load_train_config
from speechlm.train.loop import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def trained(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A speaker-aware MTP-12 model on the tiny corpus after 2 steps (random-init decoupled codec)."""
    tmp = tmp_path_factory.mktemp("eval_run")
    cfg = load_train_config(
        ROOT / "configs/slm/tiny_mtp12_spk.yaml",
        [f"data.corpus={tiny_corpus}", f"data.cache_dir={tmp / 'cache'}", f"train.out_dir={tmp / 'run'}",
         "train.max_steps=2", "train.tensorboard=false", "train.save_every=2", "train.threads=1"],
    )  # fmt: skip
    return train(cfg, show_progress=False).checkpoint
