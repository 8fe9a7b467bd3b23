"""Speech layout: codec codes ``[B, K_all, T]`` <-> the LM's speech groups ``[B, J, G]`` of global ids.

One object composes the three steps the study's token organisation is made of, each an exact
inverse of its counterpart:

1. **stream selection** — which codec streams the LM models, in order (study Appendix E.2: FACodec's
   1 prosody + 2 content streams out of 6 beat all six, Table 7);
2. **serialisation** — FWI or CWI (study §2.1 footnote 3, Appendix E.3), per-stream codes mapped
   to the disjoint slices of one global vocabulary (Eq. 3);
3. **grouping** — g tokens per LM step with END after the last real token (study §2.2, MTP).

The configuration is validated at the door; codes are validated on the way in (shape, dtype,
lengths, codebook range), ids on the way out (each slot must hold its stream's ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from speechlm.layout.interleave import FrameCodes, Order, check_order, deinterleave, interleave, token_coordinates
from speechlm.layout.mtp import GroupedSpeech, check_group_size, group, num_groups, ungroup
from speechlm.layout.vocab import SpeechVocab

__all__ = ["FrameCodes", "GroupedSpeech", "LayoutConfig", "SpeechLayout"]


@dataclass(frozen=True)
class LayoutConfig:
    """How speech tokens are organised for the LM (YAML section ``layout``)."""

    streams: tuple[int, ...] = (0, 1, 2)  # tokenizer stream indices modelled, in this order
    order: Order = "fwi"  # "fwi" frame-wise or "cwi" chunk-wise interleave
    chunk: int = 80  # CWI chunk length l in frames (study Appendix E.3); unused by FWI
    group_size: int = 1  # g tokens per LM step: 1 = NTP, else MTP with g % len(streams) == 0

    def __post_init__(self) -> None:
        streams = tuple(self.streams)
        if not streams:
            raise ValueError("layout.streams must name at least one tokenizer stream, got ()")
        for s in streams:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise ValueError(f"layout.streams entries must be stream indices >= 0, got {s!r} in {streams}")
        if len(set(streams)) != len(streams):
            raise ValueError(f"layout.streams must not repeat a stream, got {streams}")
        check_order(self.order, self.chunk)
        check_group_size(self.group_size)
        K, g = len(streams), self.group_size
        # A group must hold whole frames so that slot s always carries stream s % K (study §2.2).
        if g > 1 and g % K:
            raise ValueError(
                f"layout.group_size={g} must be a multiple of the {K} modelled streams {streams} "
                f"(each MTP group holds g/K whole frames)"
            )
        object.__setattr__(self, "streams", streams)


class SpeechLayout:
    """Maps codec codes to LM speech groups and back, for one tokenizer's stream set.

    ``codebook_sizes`` and ``names`` describe *all* the tokenizer's streams (``K_all``); the layout
    models the subset ``cfg.streams`` and its :attr:`vocab` covers just those, in that order.
    """

    def __init__(self, cfg: LayoutConfig, codebook_sizes: Sequence[int], names: Sequence[str]) -> None:
        if len(codebook_sizes) != len(names):
            raise ValueError(f"{len(codebook_sizes)} codebook sizes but {len(names)} stream names {tuple(names)}")
        for s in cfg.streams:
            if s >= len(codebook_sizes):
                raise ValueError(
                    f"layout.streams has stream index {s}, but the tokenizer has {len(codebook_sizes)} "
                    f"streams {tuple(names)} (valid: 0..{len(codebook_sizes) - 1})"
                )
        self.cfg = cfg
        self.num_tokenizer_streams = len(codebook_sizes)
        self.vocab = SpeechVocab(tuple(codebook_sizes[s] for s in cfg.streams), tuple(names[s] for s in cfg.streams))
        self._stream_masks = self.vocab.stream_masks()  # [K, V]

    @property
    def num_streams(self) -> int:
        """K, the number of modelled streams."""
        return len(self.cfg.streams)

    @property
    def group_size(self) -> int:
        return self.cfg.group_size

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"SpeechLayout(streams={self.vocab.names}, order={c.order!r}, chunk={c.chunk}, group_size={c.group_size})"
        )

    def num_groups(self, num_frames: torch.Tensor) -> torch.Tensor:
        """LM speech steps (groups) an utterance of ``num_frames [B]`` frames takes, END included."""
        return num_groups(num_frames * self.num_streams, self.group_size, with_end=True)

    def encode(self, codes: torch.Tensor, lengths: torch.Tensor) -> GroupedSpeech:
        """``codes [B, K_all, T]`` (per-stream codes), ``lengths [B]`` frames -> ``GroupedSpeech``."""
        self._check_codes(codes, lengths)
        selected = codes[:, list(self.cfg.streams)].long()
        valid = torch.arange(codes.shape[-1], device=codes.device)[None, None, :] < lengths[:, None, None]
        ids = self.vocab.to_global(selected.masked_fill(~valid, 0))
        flat = interleave(ids, lengths.long(), self.cfg.order, self.cfg.chunk, fill=self.vocab.pad_id)
        return group(flat.tokens, flat.lengths, self.group_size, end=self.vocab.end_id, pad=self.vocab.pad_id)

    def decode(self, ids: torch.Tensor) -> FrameCodes:
        """``ids [B, J, G]`` -> ``FrameCodes(codes [B, K, T], lengths [B] frames)`` of the modelled streams.

        Each item ends at its first END or PAD; a trailing partial frame (a generation stopped
        mid-frame) is dropped. Positions past ``lengths`` are 0. An id outside the slice of the
        stream its position carries is an error (a decoder without stream masks, or corrupt data).
        """
        if ids.dim() != 3 or ids.shape[-1] != self.group_size:
            raise ValueError(f"ids must be [B, J, G={self.group_size}], got shape {tuple(ids.shape)}")
        K, pad = self.num_streams, self.vocab.pad_id
        flat = ungroup(ids.long(), stop_ids=(self.vocab.end_id, pad))
        frames = deinterleave(flat.tokens, flat.lengths // K * K, K, self.cfg.order, self.cfg.chunk, fill=pad)
        T = frames.codes.shape[-1]
        valid = torch.arange(T, device=ids.device)[None, None, :] < frames.lengths[:, None, None]
        local = self.vocab.to_local(frames.codes)
        sizes = torch.tensor(self.vocab.codebook_sizes, device=ids.device)[None, :, None]
        bad = valid & ((local < 0) | (local >= sizes))
        if bool(bad.any()):
            b, k, t = (int(i) for i in bad.nonzero()[0])
            ids_k = self.vocab.stream_slice(k)
            raise ValueError(
                f"item {b}, frame {t}: id {int(frames.codes[b, k, t])} is not in stream {k} "
                f"({self.vocab.names[k]!r}, ids {ids_k.start}..{ids_k.stop - 1})"
            )
        return FrameCodes(local.masked_fill(~valid, 0), frames.lengths)

    def slot_streams(self) -> tuple[int, ...] | None:
        """Stream index (into the modelled streams) of each of the G slots when fixed, else None.

        Fixed exactly for FWI with ``G % K == 0``: every group then starts at a frame boundary.
        """
        K, G = self.num_streams, self.group_size
        if self.cfg.order != "fwi" or G % K:
            return None
        return tuple(s % K for s in range(G))

    def allowed_mask(self, step: int | torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Which ids each slot may emit at group index ``step``: ``[G, V]`` (``[*step.shape, G, V]``).

        Slot s of group j holds flat position ``j * G + s``; it may emit its stream's slice plus END
        and PAD (the decoupled head's per-stream softmax, study Eq. 3). Under CWI the stream at a
        position depends on the final chunk's width: pass ``num_frames`` when the length is known;
        without it every chunk is taken as full, as a decoder must assume.
        """
        step_t = torch.as_tensor(step, dtype=torch.long)
        if bool((step_t < 0).any()):
            raise ValueError(f"group index must be >= 0, got {step}")
        device = step_t.device
        positions = step_t[..., None] * self.group_size + torch.arange(self.group_size, device=device)  # [..., G]
        frames = None if num_frames is None else torch.tensor(num_frames, dtype=torch.long, device=device)
        stream, _ = token_coordinates(positions, frames, self.num_streams, self.cfg.order, self.cfg.chunk)
        # Past a known length CWI coordinates are meaningless (only END/PAD live there): clamp.
        mask = self._stream_masks.to(device)[stream.clamp(max=self.num_streams - 1)]  # [..., G, V]
        mask[..., self.vocab.end_id] = True
        mask[..., self.vocab.pad_id] = True
        return mask

    def _check_codes(self, codes: torch.Tensor, lengths: torch.Tensor) -> None:
        if codes.dim() != 3:
            raise ValueError(f"codes must be [B, K, T], got shape {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool or codes.is_complex():
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        B, K_all, T = codes.shape
        if K_all != self.num_tokenizer_streams:
            raise ValueError(f"codes have {K_all} streams, the layout's tokenizer has {self.num_tokenizer_streams}")
        if lengths.shape != (B,) or lengths.dtype.is_floating_point:
            raise ValueError(f"lengths must be an integer [B={B}] tensor, got {lengths.dtype} {tuple(lengths.shape)}")
        if bool((lengths < 0).any()) or bool((lengths > T).any()):
            raise ValueError(f"lengths {lengths.tolist()} must lie within 0..T={T}")
        valid = torch.arange(T, device=codes.device)[None, :] < lengths[:, None]  # [B, T]
        for k, s in enumerate(self.cfg.streams):
            row, size = codes[:, s], self.vocab.codebook_sizes[k]
            bad = valid & ((row < 0) | (row >= size))
            if bool(bad.any()):
                b, t = (int(i) for i in bad.nonzero()[0])
                raise ValueError(
                    f"item {b}, stream {s} ({self.vocab.names[k]!r}), frame {t}: code {int(row[b, t])} "
                    f"is outside the codebook 0..{size - 1}"
                )
