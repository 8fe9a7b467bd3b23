"""The joint speech vocabulary and the named text-side special tokens.

Every modelled codec stream keeps its own codebook, laid end to end in one *global* speech
vocabulary so that a single embedding table and a single (per-slot) output projection serve all
streams, while each stream still owns a disjoint slice of it (study §2.1, Eq. 3: the decoupled
speech head splits its vocabulary and projection into independent per-stream parts):

    global id = offsets[k] + code          for code in [0, codebook_sizes[k])
    end_id    = sum(codebook_sizes)         "this utterance's speech is over" (study §2.2 groups)
    pad_id    = end_id + 1                  filler after END inside the last MTP group
    size      = sum(codebook_sizes) + 2

The text side (the LLM's own tokenizer) only needs a few named markers that delimit speech and
answers in the study's prompt template (Appendix G.3); they are listed in :data:`TEXT_SPECIALS`
so that every text tokenizer registers the same strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Text-side markers (study Appendix G.3: "... You should speak like: <spk-emb-placeholder> ...
# [Human]: ... [Mini-GPT4o]: [ta]{text-response}[ua]{speech-response}").
SPEECH_BEGIN = "[ua]"  # speech follows (a speech answer, or the speech of a TTS/ASR example)
TEXT_ANSWER_BEGIN = "[ta]"  # the text answer follows
SPEAKER_PLACEHOLDER = "<|spk_emb|>"  # its embedding is replaced by the projected speaker vector (§2.3)
HUMAN = "[Human]:"
ASSISTANT = "[Assistant]:"
TEXT_SPECIALS: tuple[str, ...] = (SPEECH_BEGIN, TEXT_ANSWER_BEGIN, SPEAKER_PLACEHOLDER, HUMAN, ASSISTANT)


@dataclass(frozen=True)
class SpeechVocab:
    """Global speech ids for K streams with the given codebook sizes, plus END and PAD.

    ``names`` label the streams in error messages and reports (e.g. ``("prosody", "content0",
    "content1")``); they must be unique.
    """

    codebook_sizes: tuple[int, ...]
    names: tuple[str, ...]
    offsets: tuple[int, ...] = field(init=False)  # [K] first global id of each stream

    def __post_init__(self) -> None:
        sizes, names = tuple(self.codebook_sizes), tuple(self.names)
        if not sizes:
            raise ValueError("SpeechVocab needs at least one stream, got codebook_sizes=()")
        if len(names) != len(sizes):
            raise ValueError(f"{len(sizes)} codebook sizes {sizes} but {len(names)} names {names}")
        for name, size in zip(names, sizes):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"stream {name!r}: codebook size must be a positive integer, got {size!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"stream names must be unique, got {names}")
        offsets = [0]
        for size in sizes[:-1]:
            offsets.append(offsets[-1] + size)
        object.__setattr__(self, "codebook_sizes", sizes)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "offsets", tuple(offsets))

    @property
    def num_streams(self) -> int:
        return len(self.codebook_sizes)

    @property
    def end_id(self) -> int:
        return sum(self.codebook_sizes)

    @property
    def pad_id(self) -> int:
        return self.end_id + 1

    @property
    def size(self) -> int:
        return self.end_id + 2

    def stream_slice(self, k: int) -> slice:
        """The global ids of stream ``k``: ``offsets[k] : offsets[k] + codebook_sizes[k]``."""
        if not 0 <= k < self.num_streams:
            raise ValueError(f"stream index {k} out of range for {self.num_streams} streams {self.names}")
        return slice(self.offsets[k], self.offsets[k] + self.codebook_sizes[k])

    def stream_masks(self) -> torch.Tensor:
        """``[K, V]`` bool: row k marks stream k's slice (END/PAD are in no row)."""
        masks = torch.zeros(self.num_streams, self.size, dtype=torch.bool)
        for k in range(self.num_streams):
            masks[k, self.stream_slice(k)] = True
        return masks

    def stream_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Stream index of each global id (same shape); -1 for END/PAD and ids outside the vocabulary.

        Lets a loss restrict each target's softmax to its own stream's slice (study Eq. 3).
        """
        bounds = torch.tensor(self.offsets[1:] + (self.end_id,), device=ids.device)
        streams = torch.bucketize(ids, bounds, right=True)  # id in [offsets[k], offsets[k+1]) -> k
        inside = (ids >= 0) & (ids < self.end_id)
        return torch.where(inside, streams, torch.full_like(streams, -1))

    def to_global(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-stream codes ``[..., K, T]`` -> global ids (same shape); codes must already be in range."""
        offsets = torch.tensor(self.offsets, dtype=codes.dtype, device=codes.device)
        return codes + offsets[:, None]

    def to_local(self, ids: torch.Tensor) -> torch.Tensor:
        """Global ids ``[..., K, T]`` (row k from stream k) -> per-stream codes (same shape)."""
        offsets = torch.tensor(self.offsets, dtype=ids.dtype, device=ids.device)
        return ids - offsets[:, None]
