"""SLM checkpoints: weights + resolved config + everything a run needs to continue exactly.

One checkpoint is one folder, written whole into a temporary name and renamed into place, so a
crash mid-write never leaves a half checkpoint behind::

    OUT/checkpoints/step_000500/
        model.safetensors      # SLM weights (shared tensors such as tied embeddings stored once)
        config.yaml            # the resolved TrainConfig of the run
        meta.json              # step, data position, speech tokenizer fingerprint + facts, vocab sizes
        text_tokenizer/        # the text tokenizer (a char alphabet is built from the corpus)
        trainer_state.pt       # optimizer, scheduler, and the RNG states of every rank
    OUT/checkpoints/latest     # name of the newest complete checkpoint

``trainer_state.pt`` is absent from the final checkpoint when only weights are wanted for inference.
Inference code uses :func:`load_slm`; training resumes with :func:`load_trainer_state`.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from speechlm import config as cfglib
from speechlm.layout.speech import SpeechLayout
from speechlm.model.heads import SlotVocab
from speechlm.model.slm import SLM
from speechlm.text.base import TextTokenizer, load_text_tokenizer

CHECKPOINTS = "checkpoints"
LATEST = "latest"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
STATE_FILE = "trainer_state.pt"
TEXT_DIR = "text_tokenizer"


@dataclass(frozen=True)
class CheckpointMeta:
    step: int  # optimizer steps taken
    epoch: int  # data position to continue from: epoch of the batch plan ...
    position: int  # ... and index of the next batch in it
    tokenizer_fingerprint: str  # the speech tokenizer whose codes the model learnt (data.codes)
    tokenizer: dict  # its facts: name, frame_rate, codebook_sizes, stream_names, speaker_dim ...
    text_vocab_size: int
    speech_vocab_size: int


@dataclass(frozen=True)
class LoadedSLM:
    """A trained SLM ready for inference, with the pieces needed to feed it and read it."""

    model: SLM
    config: Any  # TrainConfig (typed loosely here to keep train.config out of this module's imports)
    text_tokenizer: TextTokenizer
    layout: SpeechLayout
    meta: CheckpointMeta
    path: Path


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS / f"step_{step:06d}"


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    config: Any,
    meta: CheckpointMeta,
    text_tokenizer: TextTokenizer,
    trainer_state: dict[str, Any] | None,
) -> Path:
    """Write one checkpoint folder atomically and point ``latest`` at it."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / MODEL_FILE))
    cfglib.dump(config, tmp / CONFIG_FILE)
    (tmp / META_FILE).write_text(json.dumps(asdict(meta), indent=1))
    text_tokenizer.save(tmp / TEXT_DIR)
    if trainer_state is not None:
        torch.save(trainer_state, tmp / STATE_FILE)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    _write_atomic(path.parent / LATEST, path.name)
    return path


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None when it has none."""
    pointer = Path(out_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / META_FILE).is_file() else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder as given, or a run folder's newest checkpoint."""
    path = Path(path)
    if (path / CHECKPOINTS / LATEST).is_file():
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
    if not (path / META_FILE).is_file():
        raise FileNotFoundError(f"{path} is neither an SLM checkpoint nor a run folder with checkpoints")
    return path


def prune_checkpoints(out_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step checkpoints (``latest`` is never deleted)."""
    root = Path(out_dir) / CHECKPOINTS
    latest = latest_checkpoint(out_dir)
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for path in steps[: max(0, len(steps) - keep)]:
        if path != latest:
            shutil.rmtree(path)


def read_meta(path: str | Path) -> CheckpointMeta:
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not an SLM checkpoint ({META_FILE} is missing)")
    return CheckpointMeta(**json.loads(meta_file.read_text()))


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load ``path/model.safetensors`` into ``model`` strictly (every tensor, matching shapes)."""
    weights = Path(path) / MODEL_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{path} is not an SLM checkpoint ({MODEL_FILE} is missing)")
    device = next(model.parameters()).device
    try:
        load_model(model, str(weights), strict=True, device=str(device))
    except RuntimeError as err:  # shape/key mismatch: a different architecture or vocabulary
        raise ValueError(f"{weights} does not fit this model: {err}") from err


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    state_file = Path(path) / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} holds weights only ({STATE_FILE} is missing); it cannot be resumed")
    return torch.load(state_file, map_location="cpu", weights_only=False)


def load_slm(path: str | Path, device: str | torch.device = "cpu") -> LoadedSLM:
    """Rebuild a trained SLM (eval mode) with its text tokenizer and speech layout, for inference."""
    from speechlm.train.config import TrainConfig  # here, not at the top: train.config imports data

    path = resolve_checkpoint(path)
    meta = read_meta(path)
    cfg = cfglib.load(TrainConfig, path / CONFIG_FILE)
    text = load_text_tokenizer(path / TEXT_DIR)
    layout = SpeechLayout(cfg.layout, meta.tokenizer["codebook_sizes"], meta.tokenizer["stream_names"])
    model = SLM(cfg.model, layout.vocab.size, text.vocab_size, SlotVocab.from_layout(layout, cfg.model.group_size))
    model.to(device)
    load_weights(model, path)
    return LoadedSLM(model=model.eval(), config=cfg, text_tokenizer=text, layout=layout, meta=meta, path=path)


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from on this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
