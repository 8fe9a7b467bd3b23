"""Training recipe of the semantic teacher (HuBERT, Hsu et al. 2021): cluster, predict masked clusters, repeat.

The recipe differs from the codec recipe (:mod:`speechlm.tokenizers.train`) in kind — offline
k-means between training phases, no decoder, no reconstruction loss — so it is one visible loop here::

    for iteration in 1..I:
        targets = k-means(MFCC if iteration == 1 else teacher.features)   # HuBERT §III-B/C
        for step in 1..S: minimise masked-prediction CE on random crops    # HuBERT eq. 2-3
    teacher.unit_codebook = k-means(teacher.features)                      # the served units()

Iteration 2 continues from iteration 1's weights with fresh targets and a fresh label embedding
(HuBERT restarts from scratch; on a CPU budget continuing is the cheaper equivalent).
Run it with ``speechlm codec train configs/codec/teacher.yaml``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from speechlm.audio import load_audio
from speechlm.runtime import make_runtime, seed_everything, set_threads
from speechlm.tokenizers.base import pad_batch
from speechlm.tokenizers.teacher import KMeansCodebook, SemanticTeacher, TeacherConfig, save_teacher


@dataclass(frozen=True)
class TeacherTrainConfig:
    """``speechlm codec train`` config for the teacher (YAML top level: ``teacher:``)."""

    data: str  # corpus folder (speechlm data synth); trains on its train-split TTS utterances
    out: str  # checkpoint folder
    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # the YAML key that selects this recipe
    iterations: int = 2  # k-means -> masked prediction rounds (HuBERT: 2 for Base)
    steps: int = 1000  # optimiser steps per iteration
    batch_size: int = 8
    crop_seconds: float = 2.0
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    kmeans_frames: int = 60000  # frames sampled for each k-means fit
    kmeans_iters: int = 30
    seed: int = 0
    device: str = "auto"
    threads: int = 1  # torch intra-op threads; on a shared 2-core machine 1 thread ran 5-10x faster than 2
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"iterations={self.iterations}, steps={self.steps}, batch_size={self.batch_size} must be >= 1"
            )
        if self.crop_seconds * self.teacher.frame_rate < 2 * self.teacher.mask_length:
            raise ValueError(f"crop_seconds={self.crop_seconds} is too short for masks of {self.teacher.mask_length} frames")


@dataclass(frozen=True)
class TeacherTrainResult:
    out: Path
    history: list[dict[str, float]]  # one row per logged step: iteration, step, loss, acc
    seconds: float


def load_split_audio(data: str | Path, split: str, sample_rate: int) -> list[np.ndarray]:
    """All TTS utterances of ``split`` as float32 arrays [N] at ``sample_rate``."""
    from speechlm.data.manifest import Corpus

    corpus = Corpus.open(data)
    utts = corpus.tts(split)
    if not utts:
        raise ValueError(f"corpus {data} has no TTS utterances in split {split!r}")
    return [load_audio(corpus.audio_path(u), sample_rate=sample_rate).wav for u in utts]


@torch.no_grad()
def per_utterance_frames(
    teacher: SemanticTeacher, wavs: list[np.ndarray], source: str, device: torch.device, batch_size: int = 8
) -> list[Tensor]:
    """Per-utterance frame features [T_u, D] from ``source`` in {"mfcc", "features"} (eval mode)."""
    teacher.eval()
    out: list[Tensor] = []
    for i in range(0, len(wavs), batch_size):
        wav, lengths = pad_batch(wavs[i : i + batch_size])
        wav, lengths = wav.to(device), lengths.to(device)
        feats = teacher.mfcc_features(wav, lengths) if source == "mfcc" else teacher.features(wav, lengths)
        out += [f[: int(n)].cpu() for f, n in zip(feats, teacher.frame_lengths(lengths))]
    return out


def fit_codebook(frames: list[Tensor], n_clusters: int, max_frames: int, iters: int, seed: int) -> KMeansCodebook:
    """k-means on at most ``max_frames`` frames drawn (seeded) from all utterances."""
    pool = torch.cat(frames)
    if len(pool) > max_frames:
        pool = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:max_frames]]
    return KMeansCodebook(n_clusters, pool.shape[1]).fit(pool, iters=iters, seed=seed)


def sample_crops(
    wavs: list[np.ndarray], labels: list[Tensor], batch_size: int, crop_frames: int, hop: int, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Frame-aligned random crops -> (wav [B,N], lengths [B] samples, targets [B,T] with -100 padding)."""
    items, targets = [], []
    for idx in torch.randint(len(wavs), (batch_size,), generator=gen).tolist():
        avail = len(labels[idx])
        frames = min(crop_frames, avail)
        start = int(torch.randint(avail - frames + 1, (1,), generator=gen))
        # Frame t is centred on samples [t*hop, (t+1)*hop): whole-hop slices keep labels aligned.
        items.append(wavs[idx][start * hop : (start + frames) * hop])
        targets.append(labels[idx][start : start + frames])
    wav, lengths = pad_batch(items)
    target = torch.full((batch_size, max(len(t) for t in targets)), -100, dtype=torch.long)
    for b, t in enumerate(targets):
        target[b, : len(t)] = t
    return wav, lengths, target


def _lr_lambda(warmup: int, total: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return fn


def train_teacher(cfg: TeacherTrainConfig) -> TeacherTrainResult:
    """Run the recipe in the module docstring; writes the checkpoint and ``history.json`` to ``cfg.out``."""
    start = time.time()
    seed_everything(cfg.seed)
    set_threads(cfg.threads or None)
    device = make_runtime(cfg.device).device
    hop = cfg.teacher.hop_length
    wavs = [w for w in load_split_audio(cfg.data, "train", cfg.teacher.sample_rate) if len(w) >= hop]
    teacher = SemanticTeacher(cfg.teacher).to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    crop_frames = int(cfg.crop_seconds * cfg.teacher.frame_rate)
    history: list[dict[str, float]] = []
    for it in range(cfg.iterations):
        source = "mfcc" if it == 0 else "features"
        frames = per_utterance_frames(teacher, wavs, source, device)
        codebook = fit_codebook(frames, cfg.teacher.n_clusters, cfg.kmeans_frames, cfg.kmeans_iters, cfg.seed + it)
        labels = [codebook(f) for f in frames]
        with torch.no_grad():  # new targets, new label embeddings e_c
            teacher.label_embeddings.normal_(generator=torch.Generator().manual_seed(cfg.seed + it))
        opt = torch.optim.AdamW(teacher.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, cfg.steps))
        teacher.train()
        bar = tqdm(range(cfg.steps), desc=f"teacher iteration {it + 1}/{cfg.iterations} ({source} targets)")
        for step in bar:
            wav, lengths, target = sample_crops(wavs, labels, cfg.batch_size, crop_frames, hop, gen)
            loss, acc = teacher.masked_prediction_loss(wav.to(device), lengths.to(device), target, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(teacher.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                row = {"iteration": it + 1, "step": step, "loss": loss.item(), "acc": acc.item()}
                history.append(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['acc']:.3f}")
    # The served units: k-means over the final model's feature layer (HuBERT's discrete units).
    frames = per_utterance_frames(teacher, wavs, "features", device)
    unit_book = fit_codebook(frames, cfg.teacher.n_clusters, cfg.kmeans_frames, cfg.kmeans_iters, cfg.seed + 99)
    teacher.unit_codebook.load_state_dict(unit_book.state_dict())
    out = save_teacher(teacher.cpu().eval(), cfg.out)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return TeacherTrainResult(out=out, history=history, seconds=time.time() - start)
