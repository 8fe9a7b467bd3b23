"""Named voices for speaker-aware generation: one mean timbre vector per corpus speaker (paper §2.3).

The study conditions generation on a continuous timbre vector from the decoupled codec's timbre
extractor (FACodec, Appendix B) placed at the prompt's speaker placeholder. A single utterance's
vector carries its own recording quirks, so a *named* speaker (``speechlm tts --speaker NAME``,
``speechlm ask --role NAME``) is the mean vector over that speaker's training utterances -- the
same ``speaker_mean`` the data pipeline can train with (``data.codes.speaker_means``). The table is
saved beside the model as ``speakers.safetensors`` -- rebuilt from the training run's code cache
and written there the first time a checkpoint without one is loaded (:func:`table_for_checkpoint`).
A reference recording (``--ref WAV``) goes through the tokenizer's timbre encoder instead.

The same vector also drives the codec's decoder when the codec needs one (``speaker_dim > 0``),
whether or not the LM itself is speaker-aware.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from speechlm.data.codes import INDEX_FILE, CodeCache, open_code_cache, speaker_means
from speechlm.data.manifest import Corpus

SPEAKERS_FILE = "speakers.safetensors"


@dataclass(frozen=True)
class SpeakerTable:
    """Speaker name -> mean timbre vector ``[Ds]`` (float32)."""

    vectors: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        dims = {tuple(v.shape) for v in self.vectors.values()}
        if len(dims) > 1 or any(len(d) != 1 or d[0] == 0 for d in dims):
            raise ValueError(f"speaker vectors must all be [Ds] of one width Ds > 0, got shapes {sorted(dims)}")

    @property
    def names(self) -> list[str]:
        return sorted(self.vectors)

    @property
    def dim(self) -> int:
        """Ds (0 for an empty table)."""
        return next(iter(self.vectors.values())).shape[0] if self.vectors else 0

    def __len__(self) -> int:
        return len(self.vectors)

    def get(self, name: str) -> torch.Tensor:
        if name not in self.vectors:
            known = ", ".join(self.names) or "none (this model has no speaker table; use a reference recording)"
            raise ValueError(f"unknown speaker {name!r}; known speakers: {known}")
        return self.vectors[name]

    def default(self) -> str:
        """The voice used when none is named: the first name in sorted order (stable across runs)."""
        if not self.vectors:
            raise ValueError("this model has no speaker table, so a voice must come from a reference recording (--ref)")
        return self.names[0]

    @classmethod
    def from_code_cache(cls, cache: CodeCache, corpus: Corpus, split: str = "train") -> SpeakerTable:
        """Mean vector of each speaker over ``split`` of a corpus whose codes ``cache`` holds."""
        return cls({name: vec.float() for name, vec in speaker_means(cache, corpus, split).items()})

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/speakers.safetensors`` atomically."""
        path = Path(directory) / SPEAKERS_FILE
        tmp = path.with_name(path.name + ".tmp")
        save_file({name: vec.contiguous() for name, vec in self.vectors.items()}, str(tmp))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> SpeakerTable:
        """The table saved in ``directory``; an empty table when there is none."""
        path = Path(directory) / SPEAKERS_FILE
        if not path.is_file():
            return cls({})
        return cls(dict(load_file(str(path))))


def table_for_checkpoint(checkpoint: str | Path, corpus: Path, split: str, cache_root: Path) -> SpeakerTable:
    """The table saved in ``checkpoint``; failing that, the means over ``split`` of the training
    run's code cache ``cache_root`` (a ``data.codes`` cache folder), saved into the checkpoint for
    next time; failing that (cache or corpus gone), an empty table."""
    table = SpeakerTable.load(checkpoint)
    if len(table) or not (cache_root / INDEX_FILE).is_file() or not corpus.is_dir():
        return table
    table = SpeakerTable.from_code_cache(open_code_cache(cache_root), Corpus.open(corpus), split)
    if len(table):
        table.save(checkpoint)
    return table
