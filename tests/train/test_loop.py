"""The SLM training loop end to end on the tiny corpus: learning, CLI, exact resume, stage 2, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from speechlm import config as cfglib
from speechlm.cli import main as cli_main
from speechlm.runtime import seed_everything
from speechlm.train.build import assemble
from speechlm.train.checkpoint import MODEL_FILE, latest_checkpoint, load_slm, read_meta
from speechlm.train.config import TrainConfig
from speechlm.train.loop import (
    NonFiniteLossError,
    WarmupCosine,
    _collate,
    make_accelerator,
    make_optimizer,
    train,
    train_step,
)

REPO = Path(__file__).resolve().parents[2]
CODEC = REPO / "configs/codec/tiny_coupled_rvq.yaml"  # no speaker vector
DECOUPLED = REPO / "configs/codec/tiny_decoupled.yaml"  # prosody/content/acoustic + 16-d timbre vector


def tiny_config(corpus: Path, out: Path, cache: Path, **sections) -> dict:
    """A tiny NTP/MTP run: 2-layer D=32 Qwen2 on a random-init tiny codec; a few steps."""
    cfg = {
        "train": {"out_dir": str(out), "max_steps": 6, "log_every": 2, "save_every": 3, "device": "cpu", "threads": 1,
                  "tensorboard": False},
        "data": {"corpus": str(corpus), "cache_dir": str(cache), "batch_size": 4},
        "tokenizer": {"config": str(CODEC)},
        "layout": {"streams": [0, 1, 2], "group_size": 3},
        "model": {"group_size": 3, "backbone": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                                               "intermediate_size": 64}},
        "optim": {"lr": 3e-3},
    }
    for name, values in sections.items():
        cfg[name] = cfglib.merge(cfg.get(name, {}), values)
    return cfg


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP contention (10x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("codes")  # shared: the tiny corpus is encoded once per module


def _load(d: dict) -> TrainConfig:
    return cfglib.from_dict(TrainConfig, d)


def test_loss_falls_on_a_fixed_batch(tiny_corpus, tmp_path, cache_dir):
    cfg = _load(tiny_config(tiny_corpus, tmp_path / "run", cache_dir, optim={"warmup_ratio": 0.0, "schedule": "constant"}))
    seed_everything(0)
    accelerator, _ = make_accelerator(cfg.train)
    setup = assemble(cfg, accelerator.device, show_progress=False)
    batch = _collate(setup, setup.train_examples[:8])
    optimizer = make_optimizer(setup.model, cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    end = setup.layout.vocab.end_id
    losses = [train_step(setup.model, optimizer, scheduler, accelerator, [batch], cfg.optim, i, end)["loss"] for i in range(40)]
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def test_cli_trains_end_to_end_and_the_checkpoint_loads(tiny_corpus, tmp_path, cache_dir):
    out = tmp_path / "run"
    path = tmp_path / "tiny.yaml"
    path.write_text("# speechlm train tiny.yaml\n" + yaml.safe_dump(tiny_config(tiny_corpus, out, cache_dir)))
    assert cli_main(["train", str(path), "train.max_steps=4", "optim.grad_accum=2"]) == 0
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4] and any("val_loss" in r for r in rows)
    assert all(r["positions_per_s"] > 0 and r["speech_codes_per_s"] > r["positions_per_s"] for r in rows if "loss" in r)
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "step_000004" and read_meta(ckpt).step == 4
    loaded = load_slm(out)
    assert loaded.layout.group_size == 3 and loaded.text_tokenizer.special_id("[ua]") >= 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["mean_speech_positions"] > 0


def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_corpus, tmp_path, cache_dir):
    sections = {"optim": {"grad_accum": 2, "warmup_ratio": 0.2}, "train": {"max_steps": 6, "save_every": 3}}
    full = _load(tiny_config(tiny_corpus, tmp_path / "full", cache_dir, **sections))
    train(full, show_progress=False)

    class Killed(Exception):
        pass

    def kill_at_4(info):  # dies after step 4 — past the step-3 checkpoint, so step 4 is redone
        if info.step == 4:
            raise Killed

    cut = _load(tiny_config(tiny_corpus, tmp_path / "cut", cache_dir, **sections))
    with pytest.raises(Killed):
        train(cut, show_progress=False, on_step=kill_at_4)
    assert latest_checkpoint(tmp_path / "cut").name == "step_000003"
    with pytest.raises(ValueError, match="pass --resume"):
        train(cut, show_progress=False)
    train(cut, resume=True, show_progress=False)
    a = load_file(str(tmp_path / "full/checkpoints/step_000006" / MODEL_FILE))
    b = load_file(str(tmp_path / "cut/checkpoints/step_000006" / MODEL_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_resumed_with_more_steps_follows_the_longer_schedule(tiny_corpus, tmp_path, cache_dir):
    from speechlm.train.loop import WarmupCosine

    sections = {"optim": {"warmup_ratio": 0.25}, "train": {"max_steps": 4, "save_every": 2, "log_every": 1}}
    short = tiny_config(tiny_corpus, tmp_path / "run", cache_dir, **sections)
    train(_load(short), show_progress=False)
    longer = _load(cfglib.merge(short, {"train": {"max_steps": 8}}))
    train(longer, resume=True, show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in rows if "lr" in r}
    schedule = WarmupCosine.from_config(longer.optim, 8)
    for step in (5, 6, 7):  # the LR logged after step s is the schedule's value for step s
        assert lrs[step] == pytest.approx(longer.optim.lr * schedule(step)), (step, lrs)


def test_speaker_aware_stage2_starts_from_stage1_and_checks_its_tokenizer(tiny_corpus, tmp_path, cache_dir):
    """The study's recipe in miniature: speaker-aware TTS+ASR (decoupled codec's timbre vector), then role-QA."""
    aware = {"tokenizer": {"config": str(DECOUPLED)}, "model": {"speaker_dim": 16}}
    stage1 = tiny_config(tiny_corpus, tmp_path / "s1", cache_dir, train={"max_steps": 2, "save_every": 2},
                         data={"task": {"speaker_aware": True}}, **aware)
    train(_load(stage1), show_progress=False)
    sft = {"train": {"stage": "sft", "init_from": str(tmp_path / "s1"), "max_steps": 2},
           "data": {"task": {"tasks": ["role_qa"], "speaker_aware": True}, "speaker_vector": "speaker_mean"}}
    result = train(_load(tiny_config(tiny_corpus, tmp_path / "s2", cache_dir, **sft, **aware)), show_progress=False)
    assert result.steps == 2 and result.train_sequences == 16  # one role-QA sequence per training QA row
    other = tiny_config(tiny_corpus, tmp_path / "s2b", cache_dir, **sft, **cfglib.merge(aware, {"tokenizer": {"seed": 1}}))
    with pytest.raises(ValueError, match="not the one stage 1"):
        train(_load(other), show_progress=False)


def test_non_finite_loss_stops_with_step_and_ids(tiny_corpus, tmp_path, cache_dir):
    cfg = _load(tiny_config(tiny_corpus, tmp_path / "run", cache_dir))
    accelerator, _ = make_accelerator(cfg.train)
    setup = assemble(cfg, accelerator.device, show_progress=False)
    with torch.no_grad():
        next(setup.model.speech_head.parameters()).fill_(float("nan"))
    optimizer = make_optimizer(setup.model, cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    batch = _collate(setup, setup.train_examples[:2])
    with pytest.raises(NonFiniteLossError, match=rf"at step 7; batch ids on rank 0: \['{batch.ids[0]}'"):
        train_step(setup.model, optimizer, scheduler, accelerator, [batch], cfg.optim, 7, setup.layout.vocab.end_id)


@pytest.mark.parametrize(
    ("sections", "error", "match"),
    [
        ({"model": {"layers": 2}}, cfglib.ConfigError, r"unknown key 'model.layers'"),
        ({"layout": {"group_size": 4}, "model": {"group_size": 4}}, cfglib.ConfigError, r"group_size=4 must be a multiple of the 3"),
        ({"layout": {"group_size": 6}}, cfglib.ConfigError, r"model.group_size=3 but layout.group_size=6"),
        ({"train": {"stage": "sft"}}, cfglib.ConfigError, r"set train.init_from"),
        ({"data": {"task": {"tasks": ["role_qa"]}}}, cfglib.ConfigError, r"role_qa is the stage-2 task"),
        ({"data": {"task": {"speaker_aware": True}}}, cfglib.ConfigError, r"model.speaker_dim is 0"),
        ({"data": {"task": {"speaker_aware": True, "tasks": ["tts", "text"]}}, "model": {"speaker_dim": 4}},
         cfglib.ConfigError, r"'text' \(no speech, no speaker slot\)"),
    ],
)
def test_bad_configs_fail_at_load(tiny_corpus, tmp_path, sections, error, match):
    with pytest.raises(error, match=match):
        _load(tiny_config(tiny_corpus, tmp_path / "run", tmp_path / "c", **sections))


def test_bad_data_fails_before_training(tiny_corpus, tmp_path, cache_dir):
    base = tiny_config(tiny_corpus, tmp_path / "run", cache_dir)
    # A tokenizer without a speaker vector cannot feed a speaker-aware model.
    aware = cfglib.merge(base, {"data": {"task": {"speaker_aware": True}}, "model": {"speaker_dim": 8}})
    with pytest.raises(ValueError, match="has none \\(speaker_dim 0\\)"):
        train(_load(aware), show_progress=False)
    # An empty transcript in the manifest.
    broken = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, broken)
    rows = [json.loads(line) for line in (broken / "tts.jsonl").read_text().splitlines()]
    rows[0]["text"] = " "
    (broken / "tts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=rf"'{rows[0]['id']}': empty text"):
        train(_load(cfglib.merge(base, {"data": {"corpus": str(broken)}})), show_progress=False)
    # A manifest row whose audio (hence codes) does not exist.
    rows[0]["text"], rows[0]["audio"] = "Hello.", "audio/missing.wav"
    (broken / "tts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        train(_load(cfglib.merge(base, {"data": {"corpus": str(broken)}})), show_progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()
    with pytest.raises(FileNotFoundError, match="corpus folder not found"):
        train(_load(cfglib.merge(base, {"data": {"corpus": str(tmp_path / "nowhere")}})), show_progress=False)


def test_warmup_cosine_schedule():
    sched = WarmupCosine(warmup=10, total=110, floor=0.1)
    assert sched(0) == 0.0 and sched(5) == pytest.approx(0.5) and sched(10) == pytest.approx(1.0)
    assert sched(60) == pytest.approx(0.55) and sched(110) == pytest.approx(0.1) and sched(500) == pytest.approx(0.1)
    values = [sched(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.slow
def test_two_process_gloo_run(tiny_corpus, tmp_path, cache_dir):
    """Data-parallel on CPU: 2 processes (gloo) via torchrun; both ranks agree and one checkpoint is written."""
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_corpus, tmp_path / "ddp", cache_dir, train={"max_steps": 4})))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29561", "-m", "speechlm.cli", "train", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 4 steps") == 1  # printed by the main process only
    meta = read_meta(latest_checkpoint(tmp_path / "ddp"))
    assert meta.step == 4 and len(torch.load(latest_checkpoint(tmp_path / "ddp") / "trainer_state.pt", weights_only=False)["rng"]) == 2
