"""The SLM training configuration: one frozen dataclass tree, one YAML file per experiment.

``speechlm train CONFIG [a.b=c ...]`` loads :class:`TrainConfig` with ``speechlm.config.load`` — an
unknown key anywhere is an error naming its dotted path — and every cross-section rule (group size
shared by layout and model, speaker width shared by tokenizer and model, stage 2 needing a stage-1
checkpoint) is checked by :func:`check_consistency` before any data is read.

The defaults are the study's (Appendix C): AdamW with betas (0.9, 0.99), lr 5e-4 on a cosine decay,
batch size 16; the released configs add weight decay 0.0 and a 3 % linear warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from speechlm import config as cfglib
from speechlm.data.dataset import DataConfig
from speechlm.layout.speech import LayoutConfig
from speechlm.model.slm import SLMConfig
from speechlm.text.base import TextTokenizerConfig
from speechlm.tokenizers.registry import TokenizerConfig

Stage = Literal["pretrain", "sft"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class TokenizerSource:
    """The speech tokenizer whose codes the SLM models: a trained one, or a config built at random.

    ``checkpoint`` is a folder written by ``speechlm codec train`` (``save_tokenizer``). ``config`` is a
    YAML holding a ``TokenizerConfig`` (at the top level or under ``tokenizer:``, so codec training
    configs work as they are); it is built with random weights from ``seed`` — for tests and smoke
    runs only, since random codes carry little of the speech.
    """

    checkpoint: Path | None = None
    config: Path | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.config is None):
            raise ValueError("tokenizer: set exactly one of `checkpoint` (a trained tokenizer) or `config` (random init)")

    def load_config(self) -> TokenizerConfig:
        assert self.config is not None
        data = cfglib.read_yaml(self.config)
        section: Any = data.get("tokenizer", data)
        return cfglib.from_dict(TokenizerConfig, section, source=str(self.config))


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + warm-up/cosine schedule + clipping + accumulation (study Appendix C)."""

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    weight_decay: float = 0.0  # released configs; applied to matrices only, never norms/biases
    warmup_ratio: float = 0.03  # released configs: 3 % of the steps
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    grad_accum: int = 1  # micro-batches per optimizer step

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must lie in [0, 1), got {self.betas}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"optim.warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError(f"optim.grad_clip and optim.weight_decay must be >= 0, got {self.grad_clip}, {self.weight_decay}")
        if self.grad_accum < 1:
            raise ValueError(f"optim.grad_accum must be >= 1, got {self.grad_accum}")


@dataclass(frozen=True)
class RunConfig:
    """Length of the run, where it writes, how often it logs, evaluates and checkpoints."""

    out_dir: Path
    max_steps: int
    stage: Stage = "pretrain"  # pretrain: TTS+ASR (§3.2 Eq. 6); sft: role-QA (Eq. 7)
    init_from: Path | None = None  # sft: a stage-1 checkpoint (or run folder: its newest) to start from
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda[:N] | mps (runtime.resolve_device)
    precision: Precision = "auto"  # auto: bf16 autocast where the device supports it, else fp32
    threads: int = 0  # CPU intra-op threads; 0 = every core this process may use
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2  # newest N step checkpoints kept (the final one always stays)
    eval_every: int = 0  # validation loss every N steps; 0 = only at the end
    eval_batches: int = 20  # at most this many validation batches per evaluation
    tensorboard: bool = True

    def __post_init__(self) -> None:
        for name in ("max_steps", "log_every", "save_every", "keep_checkpoints", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0 or self.threads < 0:
            raise ValueError(f"train.eval_every and train.threads must be >= 0, got {self.eval_every}, {self.threads}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one ``speechlm train`` run needs (YAML sections map 1:1 onto the fields)."""

    train: RunConfig
    data: DataConfig
    tokenizer: TokenizerSource
    text: TextTokenizerConfig = field(default_factory=TextTokenizerConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    model: SLMConfig = field(default_factory=SLMConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        check_consistency(self)


def check_consistency(cfg: TrainConfig) -> None:
    """Rules that span sections; each error names both keys."""
    if cfg.model.group_size != cfg.layout.group_size:
        raise ValueError(
            f"model.group_size={cfg.model.group_size} but layout.group_size={cfg.layout.group_size}; "
            "they are the same g (speech tokens per LM position) and must agree"
        )
    if cfg.data.task.speaker_aware and cfg.model.speaker_dim == 0:
        raise ValueError("data.task.speaker_aware is true but model.speaker_dim is 0; set it to the tokenizer's speaker width")
    if not cfg.data.task.speaker_aware and cfg.model.speaker_dim > 0:
        raise ValueError(f"model.speaker_dim={cfg.model.speaker_dim} but data.task.speaker_aware is false")
    if cfg.data.task.speaker_aware and "text" in cfg.data.task.tasks:
        # SLM.forward requires a placeholder in every row of a speaker-aware batch; text-only QA has none.
        raise ValueError("data.task.tasks has 'text' (no speech, no speaker slot) in a speaker-aware run; drop one")
    if cfg.train.stage == "sft" and cfg.train.init_from is None:
        raise ValueError("train.stage 'sft' starts from a stage-1 model (study §3.2): set train.init_from")
    if cfg.train.stage == "pretrain" and "role_qa" in cfg.data.task.tasks:
        raise ValueError("role_qa is the stage-2 task (Eq. 7); use train.stage: sft for it")


def load_train_config(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> TrainConfig:
    """``speechlm.config.load`` for :class:`TrainConfig` (unknown keys and bad values raise ConfigError)."""
    return cfglib.load(TrainConfig, path, overrides)


def autocast_dtype_name(precision: Precision, device_type: str, bf16_supported: bool) -> str:
    """``auto`` -> bf16 where the device computes it natively (CUDA with bf16), else fp32.

    CPU bf16 autocast exists but is slower than fp32 on most CPUs, so ``auto`` leaves CPUs in fp32.
    """
    if precision != "auto":
        return precision
    return "bf16" if device_type == "cuda" and bf16_supported else "fp32"
