"""Codec training recipe: ``speechlm codec train CONFIG [a.b=c ...] [--resume]``.

One visible loop: random crops from a corpus manifest -> ``tokenizer(wav, lengths)`` (a
:class:`~speechlm.tokenizers.base.CodecTrainOutput`) -> multi-resolution STFT + log-mel reconstruction
loss plus the design's own weighted terms (commitment, distillation, ...) -> AdamW with warm-up and
cosine decay (the optimiser settings of study App. C, betas 0.9/0.99).

``OUT/log.jsonl`` gets one row per ``log_every`` steps; ``OUT/checkpoint/`` is rewritten every
``save_every`` steps and at the end: the tokenizer as ``registry.save_tokenizer`` writes it (so
``load_tokenizer(OUT/checkpoint)`` works directly) plus ``train_config.yaml``, ``optimizer.pt`` and
``state.json`` for ``--resume``. Training stops at ``steps`` or after ``max_minutes`` of training
time (summed over resumed runs), whichever comes first.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from speechlm import config as cfglib
from speechlm.audio import AudioError
from speechlm.data.manifest import Corpus
from speechlm.runtime import resolve_device, seed_everything, set_threads
from speechlm.tokenizers.base import SpeechTokenizer
from speechlm.tokenizers.modules import SpectralLoss, SpectralLossConfig
from speechlm.tokenizers.registry import TokenizerConfig, build_tokenizer, load_tokenizer, save_tokenizer

CHECKPOINT_DIR = "checkpoint"
MAX_BAD_DRAWS = 100  # consecutive unreadable draws before the sampler gives up


@dataclass(frozen=True)
class DataConfig:
    corpus: Path = Path("data/demo")  # a corpus folder (speechlm data synth); tts.jsonl [+ qa.jsonl]
    include_qa: bool = True  # the spoken-QA answers of the same split are more speech to learn from
    crop_seconds: float = 1.0  # random crop per item; shorter items are zero-padded
    batch_size: int = 8
    val_items: int = 16  # fixed validation crops (val split), scored at every checkpoint


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)  # study App. C
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0


@dataclass(frozen=True)
class CodecTrainConfig:
    tokenizer: TokenizerConfig
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: SpectralLossConfig = field(default_factory=SpectralLossConfig)
    out_dir: Path = Path("runs/codec")
    init_from: Path | None = None  # fine-tune: start from this tokenizer checkpoint's weights (same design)
    steps: int = 2000
    max_minutes: float = 0.0  # wall-clock budget (0 = none); the run checkpoints and stops when spent
    log_every: int = 25
    save_every: int = 250
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch intra-op threads (0 = all cores this process may use)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.log_every < 1 or self.save_every < 1:
            raise ValueError(f"steps/log_every/save_every must be >= 1, got {self.steps}/{self.log_every}/{self.save_every}")


class CropSampler:
    """Random fixed-length crops of a corpus split, read from disk on demand (no corpus in memory)."""

    def __init__(self, data: DataConfig, split: str, sample_rate: int, seed: int) -> None:
        corpus = Corpus.open(data.corpus)
        if corpus.sample_rate != sample_rate:
            raise ValueError(f"corpus {data.corpus} is {corpus.sample_rate} Hz but the tokenizer expects {sample_rate} Hz")
        rows = corpus.tts(split) + (corpus.qa(split) if data.include_qa else [])
        if not rows:
            raise ValueError(f"corpus {data.corpus} has no '{split}' utterances to train on")
        self.paths = [corpus.audio_path(r) for r in rows]
        # Speaker labels for designs with speaker supervision (decoupled): index in the sorted speaker names.
        table = {name: i for i, name in enumerate(sorted(corpus.speakers))}
        self.speakers = [table[r.speaker] for r in rows]
        self.crop = int(round(data.crop_seconds * sample_rate))
        if self.crop < 1:
            raise ValueError(f"data.crop_seconds={data.crop_seconds} is shorter than one sample")
        self.rng = random.Random(seed)
        self.bad: set[int] = set()  # indices of unreadable files, skipped from then on

    def read(self, path: Path) -> np.ndarray:
        """A random crop of ``path``; raises ``AudioError`` for a missing/unreadable/empty file."""
        try:
            frames = sf.info(str(path)).frames
            if frames == 0:
                raise AudioError(f"{path}: audio is empty (0 frames)")
            start = self.rng.randrange(max(1, frames - self.crop + 1))
            wav, _ = sf.read(str(path), start=start, stop=start + self.crop, dtype="float32", always_2d=False)
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            raise AudioError(f"{path}: cannot read audio ({err})") from err
        return wav if wav.ndim == 1 else wav.mean(axis=1)

    def _draw(self) -> tuple[np.ndarray, int]:
        """-> (crop, speaker index) of a random readable item; bad files are reported once and skipped."""
        for _ in range(MAX_BAD_DRAWS):
            item = self.rng.randrange(len(self.paths))
            if item in self.bad:
                continue
            try:
                return self.read(self.paths[item]), self.speakers[item]
            except AudioError as err:
                self.bad.add(item)
                tqdm.write(f"skipping unreadable training item ({len(self.bad)} so far): {err}")
        raise AudioError(f"{MAX_BAD_DRAWS} draws in a row hit unreadable audio; {len(self.bad)} files are bad")

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ``wav [size, crop]`` zero-padded, ``lengths [size]``."""
        wav, lengths, _ = self.labelled_batch(size)
        return wav, lengths

    def labelled_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> ``wav [size, crop]`` zero-padded, ``lengths [size]``, ``speakers [size]`` (speaker indices)."""
        out = torch.zeros(size, self.crop)
        lengths = torch.zeros(size, dtype=torch.long)
        speakers = torch.zeros(size, dtype=torch.long)
        for i in range(size):
            wav, speakers[i] = self._draw()
            out[i, : len(wav)] = torch.from_numpy(wav)
            lengths[i] = len(wav)
        return out, lengths, speakers


def lr_at(step: int, progress: float, cfg: OptimConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio`` at ``progress`` 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def compute_losses(
    tok: SpeechTokenizer,
    spectral: SpectralLoss,
    wav: torch.Tensor,
    lengths: torch.Tensor,
    speakers: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All weighted loss terms plus their sum under ``"loss"``; ``speakers [B]`` reach designs that use them."""
    labelled = speakers is not None and getattr(tok, "uses_speaker_labels", False)
    out = tok(wav, lengths, speakers) if labelled else tok(wav, lengths)
    recon = out.wav[:, : wav.shape[1]]
    losses = {**spectral(recon, wav), **out.losses}
    losses["loss"] = sum(losses.values())
    return losses


def save_checkpoint(
    directory: Path, tok: SpeechTokenizer, opt: torch.optim.Optimizer, cfg: CodecTrainConfig, step: int, seconds: float
) -> None:
    save_tokenizer(tok, directory)
    cfglib.dump(cfg, directory / "train_config.yaml")
    tmp = directory / "optimizer.pt.tmp"
    torch.save(opt.state_dict(), tmp)
    tmp.replace(directory / "optimizer.pt")
    tmp = directory / "state.json.tmp"
    tmp.write_text(json.dumps({"step": step, "seconds": round(seconds, 1)}))
    tmp.replace(directory / "state.json")  # written last: its presence marks a complete checkpoint


def restore(directory: Path, device: torch.device) -> tuple[SpeechTokenizer, dict, dict]:
    """-> (tokenizer, optimizer state, ``{"step", "seconds"}``) from :func:`save_checkpoint`'s folder."""
    if not (directory / "state.json").is_file():
        raise FileNotFoundError(f"cannot resume: no complete checkpoint in {directory}")
    tok = load_tokenizer(directory, device).train()
    state = torch.load(directory / "optimizer.pt", map_location=device, weights_only=True)
    return tok, state, json.loads((directory / "state.json").read_text())


def initial_tokenizer(cfg: CodecTrainConfig) -> SpeechTokenizer:
    """``cfg.tokenizer`` at random init, or holding ``cfg.init_from``'s weights (all of them, names checked)."""
    tok = build_tokenizer(cfg.tokenizer)
    if cfg.init_from is None:
        return tok
    source = load_tokenizer(cfg.init_from)
    if source.tokenizer_config is None or source.tokenizer_config.name != cfg.tokenizer.name:
        found = source.tokenizer_config.name if source.tokenizer_config is not None else type(source).__name__
        raise ValueError(f"init_from {cfg.init_from} is a {found!r} tokenizer, not {cfg.tokenizer.name!r}")
    try:
        tok.load_state_dict(source.state_dict())
    except RuntimeError as err:
        raise ValueError(f"init_from {cfg.init_from} does not fit tokenizer {cfg.tokenizer.name!r}: {err}") from err
    return tok


@torch.no_grad()
def validate(tok: SpeechTokenizer, spectral: SpectralLoss, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    tok.eval()
    loss = compute_losses(tok, spectral, *batch)["loss"].item()
    tok.train()
    return loss


@dataclass
class _Run:
    """Mutable state of one training run."""

    tok: SpeechTokenizer
    opt: torch.optim.Optimizer
    spectral: SpectralLoss
    sampler: CropSampler
    val_batch: tuple[torch.Tensor, torch.Tensor]
    step: int
    seconds: float  # training wall time before this run (resumed runs)


def _setup(cfg: CodecTrainConfig, resume: bool) -> _Run:
    seed_everything(cfg.seed)
    set_threads(cfg.threads or None)
    device = resolve_device(cfg.device)
    if resume:
        tok, opt_state, state = restore(cfg.out_dir / CHECKPOINT_DIR, device)
    else:
        tok, opt_state, state = initial_tokenizer(cfg).to(device).train(), None, {}
    step, seconds = int(state.get("step", 0)), float(state.get("seconds", 0.0))
    if hasattr(tok, "prepare_training"):  # designs with a semantic teacher / speaker table (D2's designs)
        tok.prepare_training(Corpus.open(cfg.data.corpus))
    o = cfg.optim
    opt = torch.optim.AdamW(tok.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    val = CropSampler(cfg.data, "val", tok.sample_rate, seed=1234).batch(cfg.data.val_items)
    return _Run(
        tok=tok,
        opt=opt,
        spectral=SpectralLoss(cfg.loss, tok.sample_rate).to(device),
        sampler=CropSampler(cfg.data, "train", tok.sample_rate, cfg.seed + step),
        val_batch=(val[0].to(device), val[1].to(device)),
        step=step,
        seconds=seconds,
    )


def _train_step(run: _Run, cfg: CodecTrainConfig, lr: float) -> dict[str, torch.Tensor]:
    device = run.val_batch[0].device
    for group in run.opt.param_groups:
        group["lr"] = lr
    wav, lengths, speakers = (t.to(device) for t in run.sampler.labelled_batch(cfg.data.batch_size))
    losses = compute_losses(run.tok, run.spectral, wav, lengths, speakers)
    run.opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    losses["grad_norm"] = torch.nn.utils.clip_grad_norm_(run.tok.parameters(), cfg.optim.grad_clip)
    run.opt.step()
    run.step += 1
    return losses


def train_codec(cfg: CodecTrainConfig, resume: bool = False) -> Path:
    """Train ``cfg.tokenizer`` on ``cfg.data``; returns the checkpoint folder.

    The cosine schedule follows whichever is further along, steps or the wall-clock budget, so a
    run cut short by ``max_minutes`` still ends at a low learning rate.
    """
    run = _setup(cfg, resume)
    ckpt = cfg.out_dir / CHECKPOINT_DIR
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    cfglib.dump(cfg, cfg.out_dir / "train_config.yaml")
    budget = 60 * cfg.max_minutes if cfg.max_minutes > 0 else math.inf
    t0, first = time.monotonic() - run.seconds, run.step  # the budget spans resumed runs
    with (cfg.out_dir / "log.jsonl").open("a") as log, tqdm(total=cfg.steps, initial=run.step, desc="codec train") as bar:
        while run.step < cfg.steps and time.monotonic() - t0 < budget:
            elapsed = time.monotonic() - t0
            progress = max(run.step / cfg.steps, elapsed / budget)
            losses = _train_step(run, cfg, lr_at(run.step, progress, cfg.optim))
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss'].item():.3f}")
            row = None
            if run.step % cfg.log_every == 0:
                row = {"step": run.step, "lr": run.opt.param_groups[0]["lr"], "seconds": round(elapsed, 1)}
                row.update({k: round(v.item(), 5) for k, v in losses.items()})
            if run.step % cfg.save_every == 0 or run.step == cfg.steps:
                save_checkpoint(ckpt, run.tok, run.opt, cfg, run.step, time.monotonic() - t0)
                row = (row or {"step": run.step}) | {"val_loss": round(validate(run.tok, run.spectral, run.val_batch), 5)}
            if row is not None:
                log.write(json.dumps(row) + "\n")
                log.flush()
    if run.step > first and run.step % cfg.save_every and run.step != cfg.steps:  # stopped by the budget
        save_checkpoint(ckpt, run.tok, run.opt, cfg, run.step, time.monotonic() - t0)
    return ckpt
