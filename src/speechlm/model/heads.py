"""Speech heads: one hidden state -> logits for the ``G`` tokens of the next group (paper Eqs. 2-3, §2.2).

The study extends the speech head's 2-D weight to a 3-D tensor ``[W^1, ..., W^g]``, one slice per
group slot; for decoupled tokenizers each slice covers only its own stream's vocabulary (Eq. 3), so
each slot's softmax runs over that stream's codes plus END/PAD. Here all slots are computed at once:

- ``linear`` (default; the study's best with MLP fusion, Table 6): all slot weights are stacked into
  one ``[G*Vslot, D]`` matrix -- ONE matmul per call;
- ``mlp``: per-slot Linear(D, H) -> SiLU -> Linear(H, Vslot) as in the released code, the G first
  layers fused into one ``[G*H, D]`` matmul and the G second layers into one batched matmul;
- ``transformer``: a small Transformer over the G slot queries of one position (query = hidden state
  + a learned slot embedding), then the per-slot projections. The released code instead runs G
  separate Qwen2 decoder stacks along *time*, which needs a second KV cache at generation and was
  the worst head in Table 6; mixing across slots keeps ``speech_head(h)`` a function of ``h_s`` alone.

``SlotVocab`` says which global speech ids each slot may emit. When the layout fixes a slot's
stream (FWI with ``g % K == 0``) each slot gets weights only for its stream + END + PAD (Eq. 3).
Otherwise every slot has weights for the whole speech vocabulary, as in the study's NTP model
(Fig. 2a: single vocabulary, single head); under FWI the stream a slot carries still follows a
fixed cycle of LM speech steps (NTP over K streams: p, c1, c2, p, ...), so the SLM masks each
prediction to its stream's rows at training time (:meth:`SpeechHead.mask_steps`) -- which is
Eq. 3 again, the split projection being those rows of the full one. Under chunk-wise order the
stream depends on the utterance length, so slots stay unmasked (the generator masks with the
layout). The head returns ``[..., G, Vs]`` logits, ``-inf`` outside a slot's ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import torch
from torch import Tensor, nn

from speechlm.model.batch import IGNORE_INDEX

HeadKind = Literal["linear", "mlp", "transformer"]


class _Vocab(Protocol):  # what SlotVocab.from_layout reads of layout.SpeechVocab
    size: int
    end_id: int
    pad_id: int

    def stream_slice(self, k: int) -> slice: ...


class _LayoutConfig(Protocol):
    order: str


class _Layout(Protocol):  # what SlotVocab.from_layout reads of layout.SpeechLayout
    vocab: _Vocab
    cfg: _LayoutConfig

    @property
    def num_streams(self) -> int: ...

    def slot_streams(self) -> tuple[int, ...] | None: ...


@dataclass(frozen=True)
class SlotVocab:
    """Global speech ids each of the ``G`` head slots may emit."""

    ids: tuple[tuple[int, ...], ...]  # [G][Vslot_g] sorted global speech ids (the head's weights)
    vocab_size: int  # Vs, the global speech vocabulary
    # [P][G][...] ids slot g may emit at LM speech step j with j % P == phase; () = always `ids`.
    phases: tuple[tuple[tuple[int, ...], ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.ids:
            raise ValueError("SlotVocab needs at least one slot")
        for g, slot in enumerate(self.ids):
            if not slot or min(slot) < 0 or max(slot) >= self.vocab_size or len(set(slot)) != len(slot):
                raise ValueError(f"slot {g}'s ids must be distinct ids in [0, {self.vocab_size})")
        if self.phases and not self.is_full:
            raise ValueError("step-dependent slot vocabularies (phases) need full-vocabulary slots")
        for phase in self.phases:
            if len(phase) != self.group_size:
                raise ValueError(f"every phase needs {self.group_size} slots, got {len(phase)}")

    @classmethod
    def full(cls, group_size: int, vocab_size: int) -> SlotVocab:
        """Every slot spans the whole speech vocabulary (NTP / chunk-wise layouts)."""
        return cls(ids=(tuple(range(vocab_size)),) * group_size, vocab_size=vocab_size)

    @classmethod
    def per_stream(cls, slot_ranges: Sequence[tuple[int, int]], end_id: int, pad_id: int, vocab_size: int) -> SlotVocab:
        """Slot g emits ids ``range(*slot_ranges[g])`` (its stream's slice) plus END and PAD (Eq. 3)."""
        return cls(ids=tuple((*range(a, b), end_id, pad_id) for a, b in slot_ranges), vocab_size=vocab_size)

    @classmethod
    def from_layout(cls, layout: _Layout, group_size: int) -> SlotVocab:
        """Per-stream slots when the layout fixes each slot's stream; under FWI otherwise,
        full-vocabulary slots with the layout's cycle of per-step streams; else plain full slots."""
        vocab = layout.vocab

        def own(k: int) -> tuple[int, ...]:  # stream k's ids + END + PAD (Eq. 3)
            return (*range(vocab.stream_slice(k).start, vocab.stream_slice(k).stop), vocab.end_id, vocab.pad_id)

        streams = layout.slot_streams()
        if streams is not None:
            if len(streams) != group_size:
                raise ValueError(f"layout has {len(streams)} slots per group but the model's group_size is {group_size}")
            return cls(ids=tuple(own(k) for k in streams), vocab_size=vocab.size)
        full = cls.full(group_size, vocab.size)
        if layout.cfg.order != "fwi":
            return full
        # FWI: slot s of step j carries token j*G + s of the frame-wise stream, stream (j*G + s) % K,
        # a cycle of K / gcd(G, K) steps.
        k = layout.num_streams
        period = k // math.gcd(group_size, k)
        phases = tuple(tuple(own((j * group_size + s) % k) for s in range(group_size)) for j in range(period))
        return cls(ids=full.ids, vocab_size=vocab.size, phases=phases)

    @property
    def group_size(self) -> int:
        return len(self.ids)

    @property
    def is_full(self) -> bool:
        everything = tuple(range(self.vocab_size))
        return all(slot == everything for slot in self.ids)

    def allowed(self) -> Tensor:
        """[G,Vs] bool: which ids each slot's weights cover."""
        return self._mask(self.ids)

    def phase_allowed(self) -> Tensor:
        """[P,G,Vs] bool: which ids each slot may emit at each phase of the step cycle (P may be 0)."""
        if not self.phases:
            return torch.zeros(0, self.group_size, self.vocab_size, dtype=torch.bool)
        return torch.stack([self._mask(phase) for phase in self.phases])

    def _mask(self, slots: tuple[tuple[int, ...], ...]) -> Tensor:
        mask = torch.zeros(len(slots), self.vocab_size, dtype=torch.bool)
        for g, slot in enumerate(slots):
            mask[g, list(slot)] = True
        return mask


class SpeechHead(nn.Module):
    """[...,D] hidden states -> [...,G,Vs] speech logits, all G slots in one fused computation."""

    def __init__(
        self,
        dim: int,
        slots: SlotVocab,
        kind: HeadKind = "linear",
        hidden: int = 0,
        layers: int = 2,
        heads: int = 4,
    ) -> None:
        super().__init__()
        if kind not in ("linear", "mlp", "transformer"):
            raise ValueError(f"unknown speech head {kind!r}; expected 'linear', 'mlp' or 'transformer'")
        g, width = slots.group_size, max(len(s) for s in slots.ids)
        self.kind, self.group_size, self.vocab_size = kind, g, slots.vocab_size
        self._register_slot_tables(slots, width)
        self.trunk_mlp: nn.Linear | None = None
        self.slot_queries: nn.Parameter | None = None
        self.mixer: nn.TransformerEncoder | None = None
        feat = dim
        if kind == "mlp":
            feat = hidden or 2 * dim  # released code: D -> 2D -> SiLU -> V per slot
            self.trunk_mlp = nn.Linear(dim, g * feat)
        elif kind == "transformer":
            if dim % heads:
                raise ValueError(f"transformer head: width {dim} is not divisible by {heads} heads")
            self.slot_queries = nn.Parameter(torch.randn(g, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(
                dim, heads, hidden or 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            self.mixer = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.weight = nn.Parameter(torch.empty(g, width, feat))  # the 3-D speech head tensor of §2.2
        self.bias = nn.Parameter(torch.zeros(g, width))
        nn.init.normal_(self.weight, std=feat**-0.5)

    def _register_slot_tables(self, slots: SlotVocab, width: int) -> None:
        """Index tables between each slot's compact columns and global speech ids (not saved)."""
        g, vs = slots.group_size, slots.vocab_size
        # columns[g, j] = global id of slot g's j-th output; short slots point at a dummy column Vs.
        # local_index is the inverse: local_index[g, id] = j, or -1 where slot g cannot emit id.
        columns = torch.full((g, width), vs, dtype=torch.long)
        local_index = torch.full((g, vs), -1, dtype=torch.long)
        for i, slot in enumerate(slots.ids):
            columns[i, : len(slot)] = torch.tensor(slot)
            local_index[i, list(slot)] = torch.arange(len(slot))
        self.register_buffer("columns", columns, persistent=False)
        self.register_buffer("local_index", local_index, persistent=False)
        self.register_buffer("dead_columns", columns == vs, persistent=False)
        self.register_buffer("phase_allowed", slots.phase_allowed(), persistent=False)  # [P,G,Vs]
        self.full_vocab = slots.is_full
        self.has_dead_columns = bool(self.dead_columns.any())
        self.num_phases = len(slots.phases)

    def slot_features(self, hidden: Tensor) -> Tensor:
        """[...,D] -> [...,G,F]: what each slot's projection reads."""
        if self.trunk_mlp is not None:
            return torch.nn.functional.silu(self.trunk_mlp(hidden)).unflatten(-1, (self.group_size, -1))
        if self.mixer is not None:
            queries = hidden.unsqueeze(-2) + self.slot_queries  # [...,G,D]
            rows = math.prod(queries.shape[:-2])  # explicit, not -1: zero rows must reshape too
            return self.mixer(queries.reshape(rows, *queries.shape[-2:])).reshape(queries.shape)
        return hidden.unsqueeze(-2).expand(*hidden.shape[:-1], self.group_size, hidden.shape[-1])

    @property
    def allowed(self) -> Tensor:
        """[G,Vs] bool: which global ids each slot may emit."""
        return self.local_index >= 0

    def slot_logits(self, hidden: Tensor) -> Tensor:
        """[...,D] -> [...,G,W] compact logits: slot g's j-th column scores id ``columns[g, j]``.

        Columns past a short slot's end (streams of unequal size) are -inf. Training losses use
        this form with :meth:`to_local` targets: W = |stream| + 2 columns instead of Vs.
        """
        if self.kind == "linear":
            g, width, d = self.weight.shape  # all slots read the same h: one [G*W, D] matmul
            flat = torch.nn.functional.linear(hidden, self.weight.reshape(g * width, d), self.bias.reshape(-1))
            logits = flat.unflatten(-1, (g, width))
        else:
            logits = torch.einsum("...gf,gwf->...gw", self.slot_features(hidden), self.weight) + self.bias
        return logits.masked_fill(self.dead_columns, float("-inf")) if self.has_dead_columns else logits

    def mask_steps(self, logits: Tensor, steps: Tensor) -> Tensor:
        """-inf where slot g may not emit at LM speech step ``steps`` [...] (logits [...,G,Vs]);
        a no-op unless the slot vocabulary cycles with the step (FWI with ``G % K != 0``)."""
        if self.num_phases == 0:
            return logits
        return logits.masked_fill(~self.phase_allowed[steps % self.num_phases], float("-inf"))

    def can_emit(self, labels: Tensor, steps: Tensor) -> Tensor:
        """[...,G] global ids, [...] speech steps -> [...,G] bool: the slot may emit that id then."""
        slot = torch.arange(self.group_size, device=labels.device)
        ids = labels.clamp(min=0)
        ok = self.local_index[slot, ids] >= 0
        if self.num_phases:
            ok &= self.phase_allowed[(steps % self.num_phases).unsqueeze(-1), slot, ids]
        return ok

    def to_local(self, labels: Tensor) -> Tensor:
        """[...,G] global speech ids (or -100) -> their columns in :meth:`slot_logits` (or -100)."""
        slot = torch.arange(self.group_size, device=labels.device)
        local = self.local_index[slot, labels.clamp(min=0)]
        return local.where(labels != IGNORE_INDEX, IGNORE_INDEX)

    def forward(self, hidden: Tensor) -> Tensor:
        """[...,D] -> [...,G,Vs] logits over the global speech vocabulary (-inf outside a slot's ids)."""
        logits = self.slot_logits(hidden)
        if self.full_vocab:  # columns are the identity: no scatter needed
            return logits
        out = logits.new_full((*logits.shape[:-1], self.vocab_size + 1), float("-inf"))
        out = out.scatter(-1, self.columns.expand(*logits.shape), logits)
        return out[..., : self.vocab_size]
