"""Name -> tokenizer design: the one dispatch table, plus save/load of built tokenizers.

A :class:`TokenizerConfig` is ``{name, model}``: ``name`` picks a row of :data:`DESIGNS`, and
``model`` is that design's own frozen config dataclass (``config_class`` on the tokenizer class),
validated when the config is built — so a YAML key the design does not know is an error at load time.

Adding a design is one line in :data:`DESIGNS`. Modules are imported lazily so that the table can
name every design without importing all of them (and without import cycles).

On disk (``save_tokenizer``): ``DIR/model.safetensors`` + ``DIR/config.yaml`` (the resolved
TokenizerConfig), each written atomically (temp file + rename). A shipped checkpoint (``storage``
``fp16`` or ``fp16-int8dec``, see ``storage.py``) also leaves out the EMA codebooks' training
statistics (``embed_avg``, ``cluster_size``): encoding and decoding read only ``embed``, and loading
re-derives the statistics from it, so fine-tuning a shipped codec restarts its EMA from the shipped
codebook.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from speechlm import config as cfglib
from speechlm.tokenizers.base import SpeechTokenizer
from speechlm.tokenizers.storage import Storage, check_storage, pack, unpack

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
# vector-quantize-pytorch's EMA codebook statistics: used by the training update only.
EMA_STATS = ("embed_avg", "cluster_size")


@dataclass(frozen=True)
class Design:
    """Where a design's class lives and the constructor arguments that distinguish this variant."""

    module: str
    cls: str
    variant: dict[str, Any] = field(default_factory=dict)

    def load_class(self) -> type[SpeechTokenizer]:
        return getattr(importlib.import_module(self.module), self.cls)


DESIGNS: dict[str, Design] = {
    # Coupled codecs (study §3.2 "coupled"): one entangled code family.
    "coupled_rvq": Design("speechlm.tokenizers.coupled", "CoupledCodec", {"quantizer": "rvq"}),
    "coupled_vq": Design("speechlm.tokenizers.coupled", "CoupledCodec", {"quantizer": "vq"}),
    "coupled_fsq": Design("speechlm.tokenizers.coupled", "CoupledCodec", {"quantizer": "fsq"}),
    # Semi-decoupled / decoupled (helper D2).
    "semi_decoupled": Design("speechlm.tokenizers.semi_decoupled", "SemiDecoupledCodec"),
    "decoupled": Design("speechlm.tokenizers.decoupled", "DecoupledCodec"),
    # Pretrained codecs from a local transformers folder (EnCodec, DAC, Mimi).
    "hf_codec": Design("speechlm.tokenizers.adapters.hf_codec", "HFCodec"),
}


def available() -> list[str]:
    """Registered design names whose module imports (designs still being written are left out)."""
    names = []
    for name, design in DESIGNS.items():
        try:
            design.load_class()
        except (ImportError, AttributeError):
            continue
        names.append(name)
    return names


def design(name: str) -> Design:
    if name not in DESIGNS:
        raise ValueError(f"unknown tokenizer {name!r}; registered: {', '.join(DESIGNS)}")
    return DESIGNS[name]


@dataclass(frozen=True)
class TokenizerConfig:
    """``name`` selects the design; ``model`` is its config (a mapping in YAML, a dataclass once loaded)."""

    name: str
    model: Any = None

    def __post_init__(self) -> None:
        config_class = design(self.name).load_class().config_class
        if not isinstance(self.model, config_class):
            data = self.model if self.model is not None else {}
            object.__setattr__(self, "model", cfglib.from_dict(config_class, data, prefix="model"))


def build_tokenizer(cfg: TokenizerConfig) -> SpeechTokenizer:
    """Instantiate the design ``cfg.name`` (random init) from ``cfg.model``."""
    entry = design(cfg.name)
    tok = entry.load_class()(cfg.model, **entry.variant)
    tok.tokenizer_config = cfg
    return tok


def save_tokenizer(tok: SpeechTokenizer, directory: str | Path, storage: Storage = "fp32") -> Path:
    """Write weights (safetensors) and the resolved config into ``directory`` atomically.

    ``storage`` (``tokenizers/storage.py``): ``fp32`` as trained; ``fp16`` halves the size;
    ``fp16-int8dec`` also stores the waveform decoder's weights as int8 (shipped codecs). The two
    shipped forms leave out the EMA statistics; loading re-derives them and casts back to float.
    """
    check_storage(storage)
    if tok.tokenizer_config is None:
        raise ValueError(f"{type(tok).__name__} was not built by build_tokenizer; it has no config to save")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    if storage == "fp32":
        # save_model (not save_file) de-duplicates shared tensors, e.g. tied codebooks.
        save_model(tok, str(tmp), metadata={"storage": storage})
    else:
        state = pack({k: v for k, v in tok.state_dict().items() if not _is_ema_stat(k)}, storage)
        # clone: tied tensors (views of one storage) must not be written twice or as shared memory.
        tensors = {k: v.detach().clone().contiguous() for k, v in state.items()}
        save_file(tensors, str(tmp), metadata={"storage": storage})
    tmp.replace(directory / WEIGHTS_FILE)
    cfglib.dump(tok.tokenizer_config, directory / CONFIG_FILE)
    return directory


def load_tokenizer(directory: str | Path, device: str | torch.device = "cpu") -> SpeechTokenizer:
    """Rebuild a tokenizer saved by :func:`save_tokenizer`, in eval mode."""
    directory = Path(directory)
    for fname in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / fname).is_file():
            raise FileNotFoundError(f"{directory} is not a saved tokenizer: {fname} is missing")
    cfg = cfglib.load(TokenizerConfig, directory / CONFIG_FILE)
    tok = build_tokenizer(cfg)
    weights = directory / WEIGHTS_FILE
    with safe_open(str(weights), framework="pt") as f:
        # files written before the metadata existed are fp32 or fp16, which load_model reads alike
        storage = check_storage((f.metadata() or {}).get("storage", "fp32"))
    if storage == "fp16-int8dec":
        missing, unexpected = tok.load_state_dict(unpack(load_file(str(weights))), strict=False)
    else:
        missing, unexpected = load_model(tok, str(weights), strict=False, device="cpu")
    absent = [k for k in missing if not _is_ema_stat(k)]
    if absent or unexpected:
        raise RuntimeError(
            f"{weights} does not match its config.yaml: missing {absent[:5]}, unexpected {list(unexpected)[:5]}"
        )
    _rederive_ema_stats(tok, [k for k in missing if _is_ema_stat(k)])
    return tok.to(device).eval()


def _is_ema_stat(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in EMA_STATS


@torch.no_grad()
def _rederive_ema_stats(tok: torch.nn.Module, keys: list[str]) -> None:
    """For the EMA statistics ``keys`` a shipped checkpoint left out: ``cluster_size`` = 1 and
    ``embed_avg`` = ``embed`` (an EMA state whose mean is exactly the shipped codebook)."""
    buffers = dict(tok.named_buffers())
    for key in keys:
        buf = buffers[key]
        prefix, leaf = key.rsplit(".", 1)
        if leaf == "cluster_size":
            buf.fill_(1.0)
        else:
            buf.copy_(buffers[f"{prefix}.embed"])
