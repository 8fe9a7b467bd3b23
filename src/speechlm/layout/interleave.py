"""Flatten K parallel code streams into one token sequence and back: FWI and CWI.

The LM reads speech as one sequence, so the K modelled streams of a frame-synchronous codec must be
serialised (study §2.1 and footnote 3; Appendix E.3 compares the two orders):

- **FWI**, frame-wise interleave: ``[p_1, c_11, c_12, p_2, c_21, c_22, ...]`` — all streams of frame
  t, then frame t+1. The study's default (WER 6.07 vs 22.21 for CWI, Table 8).
- **CWI**, chunk-wise interleave: within chunks of ``chunk`` frames (``l``, typically 80) the streams
  are contiguous, ``[p_{1:l}, c_{1:l,1}, c_{1:l,2}, p_{l+1:2l}, ...]``; the final chunk holds the
  remaining ``<= l`` frames, so its width depends on the utterance length.

Both directions work on padded batches: ``codes [B, K, T]`` with ``lengths [B]`` frames, and
``tokens [B, N]`` with ``lengths [B]`` tokens (always ``K * frames``). Values past the lengths are
ignored on input and set to ``fill`` on output. Values are copied as they are, so the same code
serialises per-stream codes (the reference JSONL) and global vocabulary ids (the LM's inputs).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

Order = Literal["fwi", "cwi"]
ORDERS: tuple[str, ...] = ("fwi", "cwi")


class FrameCodes(NamedTuple):
    """Frame-synchronous codes: ``codes [B, K, T]`` and valid ``lengths [B]`` in frames."""

    codes: torch.Tensor
    lengths: torch.Tensor


class FlatTokens(NamedTuple):
    """One token sequence per item: ``tokens [B, N]`` and valid ``lengths [B]`` in tokens."""

    tokens: torch.Tensor
    lengths: torch.Tensor


def check_order(order: str, chunk: int) -> None:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
        raise ValueError(f"chunk must be a positive number of frames, got {chunk!r}")


def token_coordinates(
    positions: torch.Tensor, num_frames: torch.Tensor | None, num_streams: int, order: Order, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(stream, frame) held by each flat token position; broadcasts ``positions`` against ``num_frames``.

    ``num_frames`` only matters for CWI, where it fixes the width of the final, shorter chunk; with
    ``None`` every chunk is taken as full (what a decoder that does not yet know the length sees).
    Results at positions ``>= K * num_frames`` are meaningless and must be masked by the caller.
    """
    K = num_streams
    if order == "fwi":
        return positions % K, positions // K
    index = positions // (K * chunk)  # which chunk
    offset = positions - index * (K * chunk)  # position inside the chunk
    if num_frames is None:
        width = torch.full_like(positions, chunk)
    else:
        width = (num_frames - index * chunk).clamp(min=1, max=chunk)
    return offset // width, index * chunk + offset % width


def interleave(codes: torch.Tensor, lengths: torch.Tensor, order: Order, chunk: int, fill: int) -> FlatTokens:
    """``codes [B, K, T]``, ``lengths [B]`` frames -> ``tokens [B, K*T]``, ``lengths [B]`` = K * frames."""
    check_order(order, chunk)
    B, K, T = codes.shape
    positions = torch.arange(K * T, device=codes.device)[None, :]  # [1, N]
    stream, frame = token_coordinates(positions, lengths[:, None], K, order, chunk)
    stream, frame = stream.expand(B, K * T), frame.expand(B, K * T)  # FWI ignores the lengths: [1, N]
    valid = positions < K * lengths[:, None]
    # Clamp so that masked-out positions still gather from a legal index.
    flat_index = stream.clamp(max=K - 1) * T + frame.clamp(max=max(T - 1, 0))
    tokens = codes.reshape(B, K * T).gather(1, flat_index) if T else codes.new_empty(B, 0)
    tokens = tokens.masked_fill(~valid, fill)
    return FlatTokens(tokens, K * lengths)


def deinterleave(
    tokens: torch.Tensor, lengths: torch.Tensor, num_streams: int, order: Order, chunk: int, fill: int
) -> FrameCodes:
    """Inverse of :func:`interleave`: ``tokens [B, N]``, ``lengths [B]`` (multiples of K) -> ``codes [B, K, T]``.

    ``T`` is the longest item's frame count, ``max(lengths) // K``.
    """
    check_order(order, chunk)
    K = num_streams
    B, N = tokens.shape
    if bool((lengths % K != 0).any()) or bool((lengths > N).any()) or bool((lengths < 0).any()):
        raise ValueError(f"token lengths {lengths.tolist()} must be multiples of {K} streams within 0..{N}")
    frames = lengths // K
    T = int(frames.max()) if B else 0
    positions = torch.arange(N, device=tokens.device)[None, :]
    stream, frame = token_coordinates(positions, frames[:, None], K, order, chunk)
    stream, frame = stream.expand(B, N), frame.expand(B, N)  # FWI ignores the lengths: [1, N]
    valid = positions < lengths[:, None]
    batch = torch.arange(B, device=tokens.device)[:, None].expand(B, N)
    codes = tokens.new_full((B, K, T), fill)
    codes[batch[valid], stream[valid], frame[valid]] = tokens[valid]
    return FrameCodes(codes, frames)
