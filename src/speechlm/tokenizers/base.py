"""The speech-tokenizer interface every codec implements (DESIGN.md §4).

A speech tokenizer turns a padded batch of waveforms into discrete codes ``[B, K, T]`` (K streams,
T frames at ``frame_rate``) plus, for decoupled designs, a global speaker vector ``[B, Ds]``; and
turns codes (+ speaker vector) back into waveforms. The study's central variable is how the K
streams split the information (study §2.1, §3.2): ``coupled`` (one entangled family of RVQ/VQ/FSQ
codes), ``semi_decoupled`` (first RVQ level distilled towards semantics, SpeechTokenizer-style) and
``decoupled`` (separate prosody / content / acoustic streams + timbre vector, FACodec-style).

Conventions shared by all implementations:
- ``hop_length = sample_rate / frame_rate`` samples per frame, an integer;
- an item of ``n`` samples yields ``ceil(n / hop_length)`` frames, and ``t`` frames decode to
  ``t * hop_length`` samples — so a round trip returns the input length rounded up to whole frames;
- positions past ``lengths`` are padding: codes there are ``0`` and audio there is ``0.0``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from speechlm.tokenizers.registry import TokenizerConfig

StreamKind = Literal["prosody", "content", "acoustic", "semantic", "coupled"]
Coupling = Literal["coupled", "semi_decoupled", "decoupled"]
STREAM_KINDS: tuple[str, ...] = ("prosody", "content", "acoustic", "semantic", "coupled")
COUPLINGS: tuple[str, ...] = ("coupled", "semi_decoupled", "decoupled")


@dataclass(frozen=True)
class StreamSpec:
    """One code stream: its name (e.g. ``"rvq0"``, ``"prosody"``), what it carries and its codebook size."""

    name: str
    kind: StreamKind
    codebook_size: int

    def __post_init__(self) -> None:
        if self.kind not in STREAM_KINDS:
            raise ValueError(f"stream {self.name!r}: kind {self.kind!r} is not one of {STREAM_KINDS}")
        if self.codebook_size < 2:
            raise ValueError(f"stream {self.name!r}: codebook_size must be >= 2, got {self.codebook_size}")


@dataclass(frozen=True)
class TokenizerOutput:
    codes: torch.Tensor  # [B, K, T] int64; 0 past lengths
    lengths: torch.Tensor  # [B] int64, valid frames per item
    speaker: torch.Tensor | None = None  # [B, Ds] float, global timbre vector (decoupled designs)


@dataclass(frozen=True)
class DecodedAudio:
    wav: torch.Tensor  # [B, N] float; 0.0 past lengths
    lengths: torch.Tensor  # [B] int64, valid samples per item


@dataclass(frozen=True)
class CodecTrainOutput:
    """What a trainable in-house codec's ``forward(wav, lengths)`` returns to the training recipe."""

    wav: torch.Tensor  # [B, T * hop] reconstruction (straight-through through the quantizer)
    losses: dict[str, torch.Tensor]  # weighted auxiliary scalars (commitment, distillation, ...)


class SpeechTokenizer(nn.Module, abc.ABC):
    """Abstract codec. Subclasses set the attributes below in ``__init__`` and implement encode/decode.

    Registered designs (``registry.DESIGNS``) also name their frozen config dataclass in
    ``config_class`` and take it as the first constructor argument: ``Design(cfg, **variant)``.
    Designs trained by ``tokenizers.train`` implement ``forward(wav [B, N], lengths [B]) ->
    CodecTrainOutput``; the recipe adds the reconstruction losses to the design's own terms.
    """

    config_class: ClassVar[type[Any]]

    sample_rate: int  # Hz
    frame_rate: float  # frames/s
    streams: list[StreamSpec]
    coupling: Coupling
    speaker_dim: int = 0  # Ds; 0 when the design has no global speaker vector
    # Set by ``registry.build_tokenizer``; ``registry.save_tokenizer`` writes it beside the weights.
    tokenizer_config: TokenizerConfig | None = None

    @abc.abstractmethod
    def encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> TokenizerOutput:
        """``wav [B, N]`` at ``sample_rate`` with valid ``lengths [B]`` (samples) -> codes."""

    @abc.abstractmethod
    def decode(
        self, codes: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor | None = None
    ) -> DecodedAudio:
        """``codes [B, K, T]`` with valid ``lengths [B]`` (frames), ``speaker [B, Ds]`` -> waveforms."""

    # -- derived properties -------------------------------------------------------------------

    @property
    def num_streams(self) -> int:
        """K."""
        return len(self.streams)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return tuple(s.codebook_size for s in self.streams)

    @property
    def hop_length(self) -> int:
        """Samples per frame."""
        hop = self.sample_rate / self.frame_rate
        assert abs(hop - round(hop)) < 1e-6, f"sample_rate/frame_rate = {hop} is not an integer"
        return int(round(hop))

    @property
    def token_rate(self) -> float:
        """Discrete tokens per second of audio (all K streams): the LM's sequence cost (study Table 5)."""
        return self.frame_rate * self.num_streams

    @property
    def bitrate(self) -> float:
        """Bits per second carried by the codes (the speaker vector, if any, is not counted)."""
        return self.frame_rate * sum(math.log2(s.codebook_size) for s in self.streams)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames for items of ``num_samples`` samples: ``ceil(n / hop_length)``."""
        return torch.div(num_samples + self.hop_length - 1, self.hop_length, rounding_mode="floor")

    def num_samples(self, num_frames: torch.Tensor) -> torch.Tensor:
        return num_frames * self.hop_length

    # -- input checks shared by every implementation ------------------------------------------

    def check_sample_rate(self, sample_rate: int) -> None:
        if sample_rate != self.sample_rate:
            raise ValueError(
                f"audio is {sample_rate} Hz but tokenizer {self.describe()} expects {self.sample_rate} Hz; "
                "resample first (speechlm.audio.resample or load_audio(path, sample_rate=...))"
            )

    def check_wav(self, wav: torch.Tensor, lengths: torch.Tensor) -> None:
        """Refuse malformed waveform batches with a message naming the problem."""
        if wav.dim() != 2:
            raise ValueError(f"wav must be [B, N], got shape {tuple(wav.shape)}")
        _check_lengths(lengths, wav.shape[0], wav.shape[1], "samples")
        if wav.shape[1] == 0 or bool((lengths <= 0).any()):
            raise ValueError(f"empty audio in batch: lengths {lengths.tolist()} (samples)")
        if not bool(torch.isfinite(wav).all()):
            raise ValueError("wav contains NaN or inf samples")

    def check_codes(self, codes: torch.Tensor, lengths: torch.Tensor) -> None:
        """Refuse code batches of the wrong shape/dtype or with ids outside a stream's codebook."""
        if codes.dim() != 3 or codes.shape[1] != self.num_streams:
            raise ValueError(f"codes must be [B, K={self.num_streams}, T], got shape {tuple(codes.shape)}")
        if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        _check_lengths(lengths, codes.shape[0], codes.shape[2], "frames")
        if bool((lengths <= 0).any()):
            raise ValueError(f"empty code sequence in batch: lengths {lengths.tolist()} (frames)")
        for k, spec in enumerate(self.streams):
            row = codes[:, k]
            if row.numel() and (int(row.min()) < 0 or int(row.max()) >= spec.codebook_size):
                raise ValueError(
                    f"stream {k} ({spec.name!r}) has codes in [{int(row.min())}, {int(row.max())}], "
                    f"outside its codebook [0, {spec.codebook_size - 1}]"
                )

    def check_speaker(self, speaker: torch.Tensor | None, batch: int) -> None:
        if self.speaker_dim == 0:
            return
        if speaker is None:
            raise ValueError(f"tokenizer {self.describe()} needs a speaker vector [B, {self.speaker_dim}] to decode")
        if tuple(speaker.shape) != (batch, self.speaker_dim):
            raise ValueError(f"speaker must be [B={batch}, Ds={self.speaker_dim}], got {tuple(speaker.shape)}")

    def describe(self) -> str:
        name = self.tokenizer_config.name if self.tokenizer_config is not None else type(self).__name__
        return (
            f"{name} ({self.coupling}, K={self.num_streams}, {self.frame_rate:g} Hz frames, "
            f"{self.bitrate / 1000:.2f} kbps)"
        )


def _check_lengths(lengths: torch.Tensor, batch: int, max_len: int, unit: str) -> None:
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"lengths must be [B={batch}], got shape {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point:
        raise ValueError(f"lengths must be integers ({unit}), got {lengths.dtype}")
    if bool((lengths > max_len).any()):
        raise ValueError(f"lengths {lengths.tolist()} exceed the padded size {max_len} ({unit})")


def pad_batch(wavs: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mono waveforms ``[N_i]`` -> zero-padded ``wav [B, max N]`` float32 and ``lengths [B]``."""
    if len(wavs) == 0:
        raise ValueError("pad_batch: no waveforms given")
    items = [torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in wavs]
    for i, w in enumerate(items):
        if w.dim() != 1:
            raise ValueError(f"pad_batch: item {i} must be mono [N], got shape {tuple(w.shape)}")
    lengths = torch.tensor([w.shape[0] for w in items], dtype=torch.long)
    out = torch.zeros(len(items), int(lengths.max()))
    for i, w in enumerate(items):
        out[i, : w.shape[0]] = w
    return out, lengths


def frame_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``lengths [B]`` -> bool ``[B, max_len]``, True at valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
