"""The one SLM training loop, on Accelerate: CPU, one GPU, DDP/FSDP/DeepSpeed by launch configuration.

Both stages of the study (§3.2) run through :func:`train`; only the data differs (stage 1: TTS + ASR,
Eq. 6; stage 2: role-QA with loss on the answer, Eq. 7, initialised from stage 1). The loop is kept
visible on purpose — no Trainer class — so every step reads top to bottom::

    for step in range(start, max_steps):
        for each of grad_accum micro-batches:   forward (autocast) -> finite check -> backward
        clip -> AdamW step -> LR schedule step
        log / evaluate / checkpoint

Resuming is exact: the batch plan is a pure function of (seed, epoch), and a checkpoint stores the
data position, optimizer, scheduler and every rank's RNG states next to the weights.

Checkpoints save ``accelerator.unwrap_model(model)``, which holds the full weights under single-device,
DDP and DeepSpeed ZeRO-1/2; fully sharded strategies (FSDP, ZeRO-3) train through the same loop but
would need a full-state gather before saving, which is not implemented yet.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from speechlm import config as cfglib
from speechlm.data.dataset import BucketBatchSampler, EncodedExample, collate
from speechlm.model.batch import SLMBatch
from speechlm.runtime import Runtime, resolve_device, resolve_dtype, seed_everything, set_threads
from speechlm.train.build import TrainingSetup, assemble, meta_for
from speechlm.train.checkpoint import (
    CONFIG_FILE,
    checkpoint_dir,
    latest_checkpoint,
    load_trainer_state,
    load_weights,
    prune_checkpoints,
    read_meta,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from speechlm.train.config import OptimConfig, RunConfig, TrainConfig, autocast_dtype_name
from speechlm.train.monitor import Monitor

_MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
# Sections that must not change between a run and its resumption (train.max_steps etc. may).
_FROZEN_ON_RESUME = ("data", "tokenizer", "text", "layout", "model", "optim")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the message names the step and the batch's sequence ids."""


@dataclass(frozen=True)
class StepInfo:
    step: int
    loss: float


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    checkpoint: Path
    steps: int
    loss: float  # mean training loss of the last logging window
    val_loss: float | None
    setup_seconds: float  # tokenising/caching/encoding before the first step
    train_seconds: float  # wall time of the step loop, evaluation and checkpoints included
    positions_per_s: float  # LM positions (text tokens + speech groups) per second of training step
    speech_codes_per_s: float  # speech codes covered per second of training step
    step_seconds: float  # mean time of one optimizer step (data collation, forward, backward, update)
    train_sequences: int
    mean_positions: float  # mean LM positions per training sequence
    mean_speech_positions: float  # mean speech positions (groups) per training sequence

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class _Position:
    step: int = 0
    epoch: int = 0
    index: int = 0  # next batch of the epoch's plan


@dataclass
class _Run:
    """The live objects of one run (model and optimizer as prepared by Accelerate)."""

    accelerator: Accelerator
    setup: TrainingSetup
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: BucketBatchSampler
    pos: _Position


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    show_progress: bool = True,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    """Train the SLM of ``cfg``; ``resume`` continues from the run's newest checkpoint exactly.

    ``on_step`` is called after every optimizer step (after any checkpoint of that step).
    """
    t0 = time.perf_counter()
    run = prepare(cfg, resume=resume, show_progress=show_progress)
    acc, pos, end_id = run.accelerator, run.pos, run.setup.layout.vocab.end_id
    monitor = Monitor(cfg.train.out_dir, total_steps=cfg.train.max_steps, start_step=pos.step,
                      enabled=acc.is_main_process, tensorboard=cfg.train.tensorboard, show_progress=show_progress)
    batches = _batches(run.sampler, pos, run.setup, cfg.optim.grad_accum)
    meter = _Meter(first_step=pos.step, setup_seconds=time.perf_counter() - t0)
    try:
        while pos.step < cfg.train.max_steps:
            micro_batches = next(batches)
            tick = time.perf_counter()
            stats = train_step(run.model, run.optimizer, run.scheduler, acc, micro_batches, cfg.optim, pos.step + 1, end_id)
            stats["seconds"] = time.perf_counter() - tick  # the step alone: throughput excludes eval/checkpoints
            pos.step += 1
            meter.add(stats)
            monitor.add(**stats)
            final = pos.step == cfg.train.max_steps
            if pos.step % cfg.train.log_every == 0 or final:
                meter.last = monitor.write(pos.step, {"lr": run.scheduler.get_last_lr()[0], "epoch": pos.epoch})
            if (cfg.train.eval_every and pos.step % cfg.train.eval_every == 0) or final:
                meter.val_loss = evaluate(run.model, run.setup, cfg, acc)
                if meter.val_loss is not None:
                    monitor.record({"step": pos.step, "val_loss": meter.val_loss})
            if pos.step % cfg.train.save_every == 0 or final:
                _save(cfg, run)
            if on_step is not None:
                on_step(StepInfo(pos.step, stats["loss"]))
    finally:
        monitor.close()
    return _finish(cfg, run, meter)


def prepare(cfg: TrainConfig, *, resume: bool = False, show_progress: bool = True) -> _Run:
    """Everything before the first step: runtime, data, model, optimizer, schedule, resumed state."""
    accelerator, _ = make_accelerator(cfg.train)
    set_threads(cfg.train.threads or None)
    seed_everything(cfg.train.seed)
    start = _resume_point(cfg, resume)
    main = accelerator.is_main_process
    setup = assemble(cfg, accelerator.device, main_process_first=accelerator.main_process_first,
                     show_progress=show_progress and main)
    if main and setup.skipped:
        names = ", ".join(s.id for s in setup.skipped[:5]) + (" ..." if len(setup.skipped) > 5 else "")
        print(f"skipped {len(setup.skipped)} sequences longer than data.max_positions={cfg.data.max_positions}: {names}")
    optimizer = make_optimizer(setup.model, cfg.optim)
    schedule = WarmupCosine.from_config(cfg.optim, cfg.train.max_steps)
    # A plain function, not the dataclass itself: LambdaLR checkpoints a callable object's fields and
    # would restore the old length on resume, so a run resumed with a larger train.max_steps would
    # keep decaying towards the old end. The schedule always follows the current config.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step))
    # The scheduler stays outside prepare(): it steps once per optimizer step, whatever the world size.
    model, optimizer = accelerator.prepare(setup.model, optimizer)
    sampler = BucketBatchSampler(
        [e.length for e in setup.train_examples],
        cfg.data.batch_size,
        max_tokens=cfg.data.max_tokens,
        bucket_batches=cfg.data.bucket_batches,
        seed=cfg.train.seed,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
    )
    pos = _restore(start, accelerator, model, optimizer, scheduler) if start is not None else _Position()
    if main:
        cfglib.dump(cfg, cfg.train.out_dir / CONFIG_FILE)
    return _Run(accelerator, setup, model, optimizer, scheduler, sampler, pos)


@dataclass
class _Meter:
    """Whole-run totals for the summary (the monitor keeps per-window figures)."""

    first_step: int
    setup_seconds: float
    positions: float = 0.0
    speech_codes: float = 0.0
    step_seconds: float = 0.0  # time inside train_step only
    last: dict = field(default_factory=dict)
    val_loss: float | None = None
    started: float = field(default_factory=time.perf_counter)

    def add(self, stats: dict[str, float]) -> None:
        self.positions += stats["positions"]
        self.speech_codes += stats["speech_codes"]
        self.step_seconds += stats["seconds"]


def _finish(cfg: TrainConfig, run: _Run, meter: _Meter) -> TrainResult:
    seconds = time.perf_counter() - meter.started
    examples = run.setup.train_examples
    result = TrainResult(
        out_dir=cfg.train.out_dir,
        checkpoint=checkpoint_dir(cfg.train.out_dir, run.pos.step),
        steps=run.pos.step,
        loss=float(meter.last.get("loss", math.nan)),
        val_loss=meter.val_loss,
        setup_seconds=meter.setup_seconds,
        train_seconds=seconds,
        positions_per_s=meter.positions / max(meter.step_seconds, 1e-9),
        speech_codes_per_s=meter.speech_codes / max(meter.step_seconds, 1e-9),
        step_seconds=meter.step_seconds / max(run.pos.step - meter.first_step, 1),
        train_sequences=len(examples),
        mean_positions=sum(e.length for e in examples) / len(examples),
        mean_speech_positions=sum(int(e.is_speech.sum()) for e in examples) / len(examples),
    )
    if run.accelerator.is_main_process:
        (cfg.train.out_dir / "summary.json").write_text(json.dumps(result.to_json(), indent=1))
    val = "n/a" if result.val_loss is None else f"{result.val_loss:.4f}"
    run.accelerator.print(
        f"trained {result.steps} steps in {seconds:.1f} s (setup {meter.setup_seconds:.1f} s): loss {result.loss:.4f}, "
        f"val loss {val}, {result.positions_per_s:.0f} positions/s; checkpoint {result.checkpoint}"
    )
    return result


def make_accelerator(run: RunConfig) -> tuple[Accelerator, Runtime]:
    """The accelerator for this process; runtime.py decides device and autocast dtype."""
    device = resolve_device(run.device)
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
    dtype_name = autocast_dtype_name(run.precision, device.type, bf16_ok)
    runtime = Runtime(device=device, dtype=resolve_dtype(dtype_name, device))
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=_MIXED_PRECISION[dtype_name])
    return accelerator, runtime


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (never on norms, biases or 1-d scales)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


@dataclass(frozen=True)
class WarmupCosine:
    """LR factor: linear warm-up from 0, then cosine decay to ``floor`` at ``total`` steps (App. C)."""

    warmup: int
    total: int
    floor: float = 0.0
    constant: bool = False

    @classmethod
    def from_config(cls, cfg: OptimConfig, total: int) -> WarmupCosine:
        return cls(round(cfg.warmup_ratio * total), total, cfg.min_lr_ratio, cfg.schedule == "constant")

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / self.warmup
        if self.constant:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


_STAT_KEYS = ("loss", "text_loss", "speech_loss", "guided_loss", "text_acc", "speech_acc")


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    accelerator: Accelerator,
    micro_batches: list[SLMBatch],
    cfg: OptimConfig,
    step: int,
    speech_end_id: int,
) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` micro-batches; returns the step's statistics.

    Statistics stay on the device until one all-reduce at the end, so a step costs one host sync
    (plus the finite check). ``speech_end_id`` separates real speech codes (below it) from END/PAD.
    """
    model.train()
    n = len(micro_batches)
    stats = torch.zeros(len(_STAT_KEYS) + 2, dtype=torch.float64, device=accelerator.device)
    losses = []
    for i, batch in enumerate(micro_batches):
        batch = batch.to(accelerator.device)
        # Gradients are all-reduced once per step, on the last micro-batch.
        with contextlib.nullcontext() if i == n - 1 else accelerator.no_sync(model):
            out = model(batch, return_logits=False)
            accelerator.backward(out.loss / n)
        guided = out.losses["guided"] if "guided" in out.losses else torch.zeros_like(out.loss)
        values = [out.loss, out.losses["text"], out.losses["speech"], guided, out.metrics["text_acc"], out.metrics["speech_acc"]]
        stats[: len(_STAT_KEYS)] += torch.stack([v.detach().double() for v in values]) / n
        stats[-2] += batch.attention_mask.sum()
        stats[-1] += (batch.is_speech[..., None] & (batch.speech_ids < speech_end_id)).sum()
        losses.append((out.loss.detach(), batch.ids))
    check_finite(losses, step, accelerator)  # before the update: a NaN never reaches the weights
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    total = accelerator.reduce(stats, "sum").tolist()  # losses averaged over ranks below, counts summed
    out_stats = {key: total[k] / accelerator.num_processes for k, key in enumerate(_STAT_KEYS)}
    return {**out_stats, "grad_norm": float(grad_norm), "positions": total[-2], "speech_codes": total[-1]}


def check_finite(losses: list[tuple[torch.Tensor, list[str]]], step: int, accelerator: Accelerator) -> None:
    """Stop every rank when any rank's loss is NaN/inf, naming the step and the offending batch's ids."""
    finite = torch.stack([torch.isfinite(loss) for loss, _ in losses])
    bad = (~finite).any().float().reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, "sum")
    if bool(bad.item()):
        local = [(float(loss), ids) for loss, ids in losses if not bool(torch.isfinite(loss))]
        where = f"batch ids on rank {accelerator.process_index}: {local[0][1]}" if local else "on another rank"
        value = f" ({local[0][0]})" if local else ""
        raise NonFiniteLossError(f"non-finite loss{value} at step {step}; {where}")


@torch.no_grad()
def evaluate(model: torch.nn.Module, setup: TrainingSetup, cfg: TrainConfig, accelerator: Accelerator) -> float | None:
    """Mean validation loss over at most ``train.eval_batches`` batches (None without val data): the study's
    weighted text + speech loss, without auxiliary terms (guided attention), so runs compare."""
    examples = setup.val_examples
    if len(examples) < accelerator.num_processes:
        return None
    # Small enough batches that every rank gets at least one.
    batch_size = max(1, min(cfg.data.batch_size, len(examples) // accelerator.num_processes))
    plan = BucketBatchSampler(
        [e.length for e in examples], batch_size, max_tokens=cfg.data.max_tokens, shuffle=False,
        num_replicas=accelerator.num_processes, rank=accelerator.process_index,
    ).plan(0)[: cfg.train.eval_batches]
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for indices in plan:
        batch = _collate(setup, [examples[i] for i in indices]).to(accelerator.device)
        lm_loss = float(model(batch, return_logits=False).losses["lm"])
        total += torch.tensor([lm_loss, 1.0], dtype=torch.float64, device=total.device)
    total = accelerator.reduce(total, "sum")
    model.train()
    return float(total[0] / total[1]) if total[1] > 0 else None


# -- data, checkpoints, resumption ----------------------------------------------------------------


def _collate(setup: TrainingSetup, examples: list[EncodedExample]) -> SLMBatch:
    return collate(examples, text_pad_id=setup.text_tokenizer.pad_id, speech_pad_id=setup.layout.vocab.pad_id)


def _batches(sampler: BucketBatchSampler, pos: _Position, setup: TrainingSetup, accum: int) -> Iterator[list[SLMBatch]]:
    """Endless steps of ``accum`` collated micro-batches; keeps ``pos`` at the next unread batch."""
    stream = sampler.stream(pos.epoch, pos.index)
    while True:
        micro = []
        for _ in range(accum):
            epoch, index, indices = next(stream)
            pos.epoch, pos.index = epoch, index + 1
            micro.append(_collate(setup, [setup.train_examples[i] for i in indices]))
        yield micro


def _resume_point(cfg: TrainConfig, resume: bool) -> Path | None:
    latest = latest_checkpoint(cfg.train.out_dir)
    if resume:
        if latest is None:
            raise FileNotFoundError(f"--resume: no checkpoint to resume in {cfg.train.out_dir / 'checkpoints'}")
        saved = cfglib.to_dict(cfglib.load(TrainConfig, latest / CONFIG_FILE))
        now = cfglib.to_dict(cfg)
        changed = [s for s in _FROZEN_ON_RESUME if saved[s] != now[s]]
        if changed:
            raise ValueError(f"cannot resume {latest}: config section(s) {changed} differ from the checkpoint's")
        return latest
    if latest is not None:
        raise ValueError(
            f"{cfg.train.out_dir} already holds checkpoints ({latest.name}); pass --resume to continue the run "
            "or choose another train.out_dir"
        )
    return None


def _restore(path: Path, accelerator: Accelerator, model, optimizer, scheduler) -> _Position:
    meta = read_meta(path)
    load_weights(accelerator.unwrap_model(model), path)
    state = load_trainer_state(path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rngs = state["rng"]
    if len(rngs) != accelerator.num_processes:
        raise ValueError(f"{path} was written by {len(rngs)} processes; resume it with the same number, not {accelerator.num_processes}")
    set_rng_state(rngs[accelerator.process_index])
    return _Position(step=meta.step, epoch=meta.epoch, index=meta.position)


def _save(cfg: TrainConfig, run: _Run) -> None:
    acc, pos = run.accelerator, run.pos
    rngs = gather_object([rng_state()])  # every rank's RNG, gathered to all ranks
    if acc.is_main_process:
        state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "rng": rngs}
        save_checkpoint(
            checkpoint_dir(cfg.train.out_dir, pos.step),
            model=acc.unwrap_model(run.model),
            config=cfg,
            meta=meta_for(run.setup, pos.step, pos.epoch, pos.index),
            text_tokenizer=run.setup.text_tokenizer,
            trainer_state=state,
        )
        prune_checkpoints(cfg.train.out_dir, cfg.train.keep_checkpoints)
    acc.wait_for_everyone()
