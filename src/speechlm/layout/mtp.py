"""Multi-token prediction groups: cut a token sequence into groups of g, and join them back.

Study §2.2: every ``g`` adjacent speech tokens form a group ``G_j`` that one hidden state decodes at
once (and whose ``g`` input embeddings are fused into one input vector, Eq. 4), so the LM runs
``1/g`` as many speech steps. With an interleaved decoupled stream (FWI) and ``g`` a multiple of
the number of streams K, a group holds ``g / K`` whole frames and slot ``s`` always carries stream
``s % K`` — the fixed per-slot vocabularies of the decoupled MTP head.

An optional END token is written right after the last real token so the model learns where speech
stops; PAD fills the rest of the last group (and whole groups of shorter items in a batch). The
reference JSONL has no END — its heads beyond the first are only right-padded — so ``end`` is
optional here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from speechlm.layout.interleave import FlatTokens


@dataclass(frozen=True)
class GroupedSpeech:
    """Speech as MTP groups: what one LM step reads (fused, Eq. 4) and predicts (g heads)."""

    ids: torch.Tensor  # [B, J, G] token ids; END after the last real token (when used), then PAD
    lengths: torch.Tensor  # [B] groups holding a real token or END; later groups are all PAD


def check_group_size(group_size: int) -> None:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group size must be a positive integer, got {group_size!r}")


def num_groups(num_tokens: torch.Tensor, group_size: int, with_end: bool) -> torch.Tensor:
    """Groups needed for ``num_tokens [B]`` real tokens (+ one END when ``with_end``): ceil((n + e) / g)."""
    total = num_tokens + int(with_end)
    return (total + group_size - 1) // group_size


def group(tokens: torch.Tensor, lengths: torch.Tensor, group_size: int, end: int | None, pad: int) -> GroupedSpeech:
    """``tokens [B, N]``, ``lengths [B]`` tokens -> ``GroupedSpeech(ids [B, J, g], lengths [B] groups)``.

    ``J`` is the most groups any item needs (0 for an empty batch without END). Inside the result,
    position ``lengths[b]`` of item b's flattened groups is ``end`` (when given) and every later
    position is ``pad``.
    """
    check_group_size(group_size)
    B, N = tokens.shape
    if bool((lengths < 0).any()) or bool((lengths > N).any()):
        raise ValueError(f"token lengths {lengths.tolist()} must lie within 0..{N}")
    counts = num_groups(lengths, group_size, with_end=end is not None)
    J = int(counts.max()) if B else 0
    width = J * group_size
    flat = tokens.new_full((B, width), pad)
    keep = min(N, width)
    positions = torch.arange(keep, device=tokens.device)[None, :]
    flat[:, :keep] = torch.where(positions < lengths[:, None], tokens[:, :keep], flat[:, :keep])
    if end is not None:
        flat[torch.arange(B, device=tokens.device), lengths] = end
    return GroupedSpeech(flat.reshape(B, J, group_size), counts)


def ungroup(groups: torch.Tensor, stop_ids: tuple[int, ...]) -> FlatTokens:
    """``groups [B, J, g]`` -> ``tokens [B, J*g]`` with ``lengths [B]`` = index of the first stop id.

    Everything from the first stop id (END or PAD) on is not part of the item; an item without one
    uses all ``J * g`` positions (a generation that ran out of steps).
    """
    B, J, g = groups.shape
    tokens = groups.reshape(B, J * g)
    if J * g == 0:
        return FlatTokens(tokens, tokens.new_zeros(B))
    stops = torch.zeros_like(tokens, dtype=torch.bool)
    for stop in stop_ids:
        stops |= tokens == stop
    positions = torch.arange(J * g, device=groups.device).expand(B, J * g)
    first_stop = torch.where(stops, positions, torch.full_like(positions, J * g)).amin(dim=1)
    return FlatTokens(tokens, first_stop)
