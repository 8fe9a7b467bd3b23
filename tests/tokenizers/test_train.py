"""The codec recipe on the tiny corpus: loss goes down, checkpoints resume, configs load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speechlm import config
from speechlm.tokenizers.modules import SpectralLoss
from speechlm.tokenizers.registry import load_tokenizer
from speechlm.tokenizers.train import CodecTrainConfig, CropSampler, compute_losses, lr_at, train_codec
from tests.tokenizers.conftest import CONFIG_DIR

TINY = CONFIG_DIR / "tiny_coupled_rvq.yaml"


def _cfg(corpus: Path, out: Path, *overrides: str) -> CodecTrainConfig:
    return config.load(CodecTrainConfig, TINY, [f"data.corpus={corpus}", f"out_dir={out}", *overrides])


def test_training_lowers_the_loss_on_held_out_crops(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_corpus, tmp_path / "run", "steps=60", "save_every=60", "optim.lr=3.0e-3")
    val = CropSampler(cfg.data, "val", 16_000, seed=7).batch(6)
    spectral = SpectralLoss(cfg.loss, 16_000)

    def val_loss(tok) -> float:
        with torch.no_grad():
            return compute_losses(tok.eval(), spectral, *val)["loss"].item()

    from speechlm.tokenizers.registry import build_tokenizer

    torch.manual_seed(cfg.seed)
    before = val_loss(build_tokenizer(cfg.tokenizer))
    ckpt = train_codec(cfg)
    after = val_loss(load_tokenizer(ckpt))
    assert after < 0.85 * before, (before, after)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 60 and "val_loss" in rows[-1] and {"stft", "mel", "commit"} <= rows[0].keys()


def test_resume_continues_from_the_saved_step(tiny_corpus: Path, tmp_path: Path) -> None:
    train_codec(_cfg(tiny_corpus, tmp_path / "run", "steps=4", "save_every=2", "log_every=1"))
    ckpt = train_codec(_cfg(tiny_corpus, tmp_path / "run", "steps=6", "save_every=2", "log_every=1"), resume=True)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((ckpt / "state.json").read_text())["step"] == 6


def test_resume_without_a_checkpoint_is_a_clear_error(tiny_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        train_codec(_cfg(tiny_corpus, tmp_path / "empty"), resume=True)


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    o = config.from_dict(CodecTrainConfig, {"tokenizer": {"name": "coupled_fsq"}}).optim
    assert lr_at(0, 0.0, o) < lr_at(o.warmup_steps - 1, 0.0, o) == pytest.approx(o.lr)
    assert lr_at(o.warmup_steps, 0.5, o) < o.lr
    assert lr_at(o.warmup_steps, 1.0, o) == pytest.approx(o.lr * o.min_lr_ratio)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_codec_config_names_its_command(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# speechlm ") and path.name in first, first


# `codec train` also runs the semantic teacher's recipe (a top-level `teacher:` key, tested with it).
TRAIN_CONFIGS = [p for p in sorted(CONFIG_DIR.glob("*.yaml")) if "tokenizer" in config.read_yaml(p)]


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_every_codec_train_config_loads_and_round_trips(path: Path) -> None:
    cfg = config.load(CodecTrainConfig, path)
    assert config.from_dict(CodecTrainConfig, config.to_dict(cfg)) == cfg  # round trip


def test_unknown_model_key_is_an_error_naming_it() -> None:
    with pytest.raises(config.ConfigError, match="wobble"):
        config.from_dict(CodecTrainConfig, {"tokenizer": {"name": "coupled_rvq", "model": {"wobble": 1}}})
    with pytest.raises(config.ConfigError, match="unknown tokenizer"):
        config.from_dict(CodecTrainConfig, {"tokenizer": {"name": "nope"}})


def test_sampler_skips_unreadable_files_and_reports_them(tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    cfg = _cfg(corpus, tmp_path / "run")
    sampler = CropSampler(cfg.data, "train", 16_000, seed=0)
    broken = sampler.paths[: len(sampler.paths) // 2]
    for path in broken:
        path.write_bytes(b"not a wav")
    wav, lengths = sampler.batch(16)
    assert wav.shape == (16, sampler.crop) and (lengths > 0).all()
    assert sampler.bad and all(sampler.paths[i] in broken for i in sampler.bad)
    assert "skipping unreadable training item" in capsys.readouterr().out


def test_init_from_starts_at_the_checkpoint_weights(tiny_corpus: Path, tmp_path: Path) -> None:
    from speechlm.tokenizers.train import initial_tokenizer

    ckpt = train_codec(_cfg(tiny_corpus, tmp_path / "base", "steps=2", "save_every=2"))
    tok = initial_tokenizer(_cfg(tiny_corpus, tmp_path / "ft", f"init_from={ckpt}"))
    for name, tensor in load_tokenizer(ckpt).state_dict().items():
        torch.testing.assert_close(tok.state_dict()[name], tensor, msg=name)
    other = CONFIG_DIR / "tiny_coupled_fsq.yaml"
    cfg = config.load(CodecTrainConfig, other, [f"data.corpus={tiny_corpus}", f"init_from={ckpt}"])
    with pytest.raises(ValueError, match="not 'coupled_fsq'"):
        initial_tokenizer(cfg)
