"""Every configs/slm/*.yaml loads, names its command, and the grid of study settings is complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechlm import config as cfglib
from speechlm.train.config import OptimConfig, TokenizerSource, TrainConfig, autocast_dtype_name, load_train_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs/slm").glob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 16


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_starts_with_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# speechlm train configs/slm/{path.name}"), first
    cfg = load_train_config(path)
    assert cfg.train.out_dir == Path("runs/slm") / path.stem  # one run folder per config
    assert cfglib.from_dict(TrainConfig, cfglib.to_dict(cfg)) == cfg  # the resolved config round-trips
    if cfg.train.stage == "sft":
        # role-QA (Eq. 7), alone or with TTS rehearsal (the shipped default model keeps reading aloud)
        assert cfg.data.task.tasks[0] == "role_qa" and set(cfg.data.task.tasks) <= {"role_qa", "tts"}
        assert cfg.train.init_from is not None
        assert load_train_config(REPO / "configs/slm" / f"{Path(cfg.train.init_from).name}.yaml").data.task.speaker_aware


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_the_study_grid_is_complete(preset):
    """NTP and MTP-3/6/12 (§2.2, Table 2), each with and without speaker awareness (§2.3)."""
    for kind, g in {"ntp": 1, "mtp3": 3, "mtp6": 6, "mtp12": 12}.items():
        plain = load_train_config(REPO / f"configs/slm/{preset}_{kind}.yaml")
        aware = load_train_config(REPO / f"configs/slm/{preset}_{kind}_spk.yaml")
        assert plain.layout.group_size == aware.layout.group_size == g
        assert not plain.data.task.speaker_aware and aware.data.task.speaker_aware and aware.model.speaker_dim > 0
        assert plain.optim == aware.optim == OptimConfig()  # the study's optimiser (App. C)


def test_overrides_apply_and_unknown_keys_fail():
    path = REPO / "configs/slm/tiny_mtp3.yaml"
    cfg = load_train_config(path, ["train.max_steps=7", "optim.lr=1e-3"])
    assert cfg.train.max_steps == 7 and cfg.optim.lr == 1e-3
    with pytest.raises(cfglib.ConfigError, match=r"unknown key 'optim.learning_rate'"):
        load_train_config(path, ["optim.learning_rate=1e-3"])


def test_tokenizer_source_needs_exactly_one(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        TokenizerSource()
    with pytest.raises(ValueError, match="exactly one"):
        TokenizerSource(checkpoint=Path("a"), config=Path("b"))
    # A codec training YAML works as it is: its `tokenizer:` section is read.
    cfg = TokenizerSource(config=REPO / "configs/codec/tiny_coupled_rvq.yaml").load_config()
    assert cfg.name == "coupled_rvq"


def test_auto_precision():
    assert autocast_dtype_name("auto", "cuda", bf16_supported=True) == "bf16"
    assert autocast_dtype_name("auto", "cuda", bf16_supported=False) == "fp32"
    assert autocast_dtype_name("auto", "cpu", bf16_supported=False) == "fp32"
    assert autocast_dtype_name("bf16", "cpu", bf16_supported=False) == "bf16"
