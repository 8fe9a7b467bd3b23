"""Character tokenizer for the tiny and demo presets.

A fixed alphabet keeps the text vocabulary (and so the tiny backbone's embedding and language head)
a few dozen rows, which is what lets the tiny SLM train in seconds on a CPU. Ids are laid out as
``<pad>, <eos>, alphabet (sorted), named specials (in the order added)``; the alphabet is fixed at
construction, so a character outside it is an error naming it, never a silent ``<unk>``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Sequence

from speechlm.text.base import MANIFEST, unknown_special

PAD = "<pad>"
EOS = "<eos>"


class CharTokenizer:
    """One id per character of a fixed alphabet, plus whole-token named specials."""

    def __init__(self, alphabet: Iterable[str], specials: Sequence[str] = ()) -> None:
        chars = sorted(set(alphabet))
        bad = [c for c in chars if len(c) != 1]
        if bad:
            raise ValueError(f"alphabet entries must be single characters, got {bad[0]!r}")
        if not chars:
            raise ValueError("a character tokenizer needs a non-empty alphabet")
        self._tokens: list[str] = [PAD, EOS, *chars]
        self._ids: dict[str, int] = {t: i for i, t in enumerate(self._tokens)}
        self._num_chars = len(chars)
        self._specials: list[str] = []
        self._special_re: re.Pattern[str] | None = None
        self.add_specials(specials)

    @classmethod
    def from_texts(cls, texts: Iterable[str], specials: Sequence[str] = ()) -> CharTokenizer:
        """Alphabet = every character that occurs in ``texts`` (e.g. a corpus's transcripts and QA)."""
        return cls({c for text in texts for c in text}, specials)

    @classmethod
    def from_charset(cls, charset: str, specials: Sequence[str] = ()) -> CharTokenizer:
        return cls(charset, specials)

    # -- TextTokenizer protocol -------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def pad_id(self) -> int:
        return self._ids[PAD]

    @property
    def eos_id(self) -> int:
        return self._ids[EOS]

    @property
    def specials(self) -> tuple[str, ...]:
        return tuple(self._specials)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        pieces = self._special_re.split(text) if self._special_re is not None else [text]
        # re.split with one capturing group alternates plain text (even) and specials (odd).
        for i, piece in enumerate(pieces):
            if i % 2 == 1:
                ids.append(self._ids[piece])
                continue
            for char in piece:
                if char not in self._ids:
                    raise ValueError(
                        f"character {char!r} (U+{ord(char):04X}) in {text!r} is not in the tokenizer's "
                        f"{self._num_chars}-character alphabet"
                    )
                ids.append(self._ids[char])
        return ids

    def decode(self, ids: Sequence[int], skip_specials: bool = False) -> str:
        out = []
        first_special = 2 + self._num_chars
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self._tokens):
                raise ValueError(f"token id {i} is out of range for a vocabulary of {len(self._tokens)}")
            if skip_specials and (i < 2 or i >= first_special):
                continue
            out.append(self._tokens[i])
        return "".join(out)

    def special_id(self, name: str) -> int:
        if name in (PAD, EOS):
            return self._ids[name]
        if name not in self._specials:
            raise unknown_special(name, self._specials)
        return self._ids[name]

    def add_specials(self, names: Sequence[str]) -> list[int]:
        for name in names:
            if not name:
                raise ValueError("a named special must be a non-empty string")
            if name in self._ids and name not in self._specials and len(name) == 1:
                raise ValueError(f"special {name!r} clashes with a character of the alphabet")
            if name not in self._ids:
                self._ids[name] = len(self._tokens)
                self._tokens.append(name)
                self._specials.append(name)
        if self._specials:
            # Longest first, so "[Human]:" wins over a shorter special that is its prefix.
            alternatives = sorted(self._specials, key=len, reverse=True)
            self._special_re = re.compile("(" + "|".join(re.escape(s) for s in alternatives) + ")")
        return [self._ids[n] for n in names]

    # -- persistence ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        alphabet = self._tokens[2 : 2 + self._num_chars]
        payload = {"kind": "char", "alphabet": alphabet, "specials": self._specials}
        tmp = directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=1))
        tmp.replace(directory / MANIFEST)

    @classmethod
    def load(cls, directory: str | Path) -> CharTokenizer:
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no character tokenizer saved in {directory} (missing {MANIFEST})")
        payload = json.loads(path.read_text())
        if payload.get("kind") != "char":
            raise ValueError(f"{path} holds a {payload.get('kind')!r} tokenizer, not 'char'")
        return cls(payload["alphabet"], payload["specials"])

    def __repr__(self) -> str:
        return f"CharTokenizer(chars={self._num_chars}, specials={len(self._specials)}, vocab={self.vocab_size})"
