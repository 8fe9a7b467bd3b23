"""The speech-language model: an LLM backbone that reads and writes text and speech (paper §2).

    text ids ──► text embedding ─────────┐
    speech groups [G] ──► table + fusion ├─► where(is_speech) ─► speaker injection ─► backbone ─► h
    speaker vector ──► projector ────────┘                                                       │
                      language head (Eq. 1) ◄──────────────────────────────────┬─────────────────┘
                                                      speech head, G slots (Eqs. 2-3, §2.2) ◄──┘

Training and generation share the pieces but not the loop (as moshi's ``LMModel`` does):
``forward(batch)`` is the training step only; a generator composes ``embed`` -> ``backbone(...,
past_key_values, use_cache=True)`` -> ``text_head`` / ``speech_head`` itself, one position at a time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechlm.model.backbone import Backbone, BackboneConfig
from speechlm.model.batch import IGNORE_INDEX, SLMBatch
from speechlm.model.guided import GuidedAttentionConfig, guided_attention_loss
from speechlm.model.heads import HeadKind, SlotVocab, SpeechHead
from speechlm.model.losses import combine, masked_positions, speech_loss, text_loss
from speechlm.model.speaker import SpeakerProjector
from speechlm.model.speech import FusionKind, SpeechEmbedding


@dataclass(frozen=True)
class SLMConfig:
    """Architecture and loss weighting of the SLM (defaults: the study's MTP setting, App. E.1)."""

    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    group_size: int = 1  # G: speech tokens per LM position (1 = NTP, g = MTP; §2.2)
    fusion: FusionKind = "mlp"  # MTP input fusion (Eq. 4); 'mean' = released code
    fusion_hidden: int = 0  # mlp fusion width; 0 = 2*D
    head: HeadKind = "linear"  # speech head; Table 6 best: mlp fusion + linear head
    head_hidden: int = 0  # mlp head: 0 = 2*D (released code); transformer head: FFN width, 0 = 4*D
    head_layers: int = 2  # transformer head depth (released code: 2)
    head_heads: int = 4  # transformer head attention heads
    speaker_dim: int = 0  # Ds of the speaker vector; 0 = no speaker-aware conditioning (§2.3)
    speaker_hidden: int = 0  # projector width; 0 = 4*Ds (released code)
    text_loss_weight: float = 0.2  # released code
    speech_loss_weight: float = 0.8  # released code
    guided: GuidedAttentionConfig = dataclasses.field(default_factory=GuidedAttentionConfig)  # off by default

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.speaker_dim < 0:
            raise ValueError(f"speaker_dim must be >= 0, got {self.speaker_dim}")
        weights = (self.text_loss_weight, self.speech_loss_weight)
        if min(weights) < 0 or sum(weights) == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got text={weights[0]} speech={weights[1]}")
        if self.guided.enabled and self.backbone.attn_implementation != "eager":
            raise ValueError("guided attention reads attention weights: set model.backbone.attn_implementation: eager")
        if self.guided.enabled and self.backbone.kind == "qwen2":  # a fresh backbone's size is known here
            self.guided.check_fits(self.backbone.num_layers, self.backbone.num_heads)


@dataclass(frozen=True)
class SLMOutput:
    loss: Tensor  # [] weighted training objective
    # 'text', 'speech', 'lm' (their weighted sum: the study's objective) and 'guided' when on (graph-attached);
    # 'speech_slot_{g}' (detached)
    losses: dict[str, Tensor]
    text_logits: Tensor | None  # [B,S,Vt] (None when forward(return_logits=False))
    speech_logits: Tensor | None  # [B,S,G,Vs], -inf outside each slot's ids
    metrics: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # 'text_acc', 'speech_acc' (detached)


class SLM(nn.Module):
    """Backbone + speech embedding/fusion + language and speech heads + optional speaker projector."""

    def __init__(
        self,
        cfg: SLMConfig,
        speech_vocab_size: int,
        text_vocab_size: int,
        slots: SlotVocab | None = None,
        backbone: Backbone | None = None,
    ) -> None:
        """``slots`` (``SlotVocab.from_layout(layout, cfg.group_size)``) restricts each head slot to its
        stream (Eq. 3); without it every slot spans the whole speech vocabulary. ``backbone``: an
        already built one to share instead of building ``cfg.backbone`` (the decoding benchmark runs
        one set of backbone weights under every group size)."""
        super().__init__()
        slots = slots or SlotVocab.full(cfg.group_size, speech_vocab_size)
        if slots.group_size != cfg.group_size or slots.vocab_size != speech_vocab_size:
            raise ValueError(
                f"slot vocabulary is for G={slots.group_size}, Vs={slots.vocab_size}, "
                f"but the model has group_size={cfg.group_size}, speech_vocab_size={speech_vocab_size}"
            )
        self.cfg = cfg
        self.speech_vocab_size = speech_vocab_size
        self.backbone = backbone if backbone is not None else Backbone.build(cfg.backbone, text_vocab_size)
        if self.backbone.text_vocab_size != text_vocab_size:
            served = self.backbone.text_vocab_size
            raise ValueError(f"shared backbone serves {served} text ids but text_vocab_size is {text_vocab_size}")
        dim = self.backbone.hidden_size
        with torch.no_grad():
            text_std = float(self.backbone.text_embedding.weight.float().std())
        self.speech_embedding = SpeechEmbedding(
            speech_vocab_size, dim, cfg.group_size, cfg.fusion, cfg.fusion_hidden, init_std=text_std
        )
        self.speech_head = SpeechHead(dim, slots, cfg.head, cfg.head_hidden, cfg.head_layers, cfg.head_heads)
        self.speaker_projector = SpeakerProjector(cfg.speaker_dim, dim, cfg.speaker_hidden) if cfg.speaker_dim else None

    @property
    def text_vocab_size(self) -> int:
        return self.backbone.text_vocab_size

    # -- pieces shared with generation ------------------------------------------------------------
    def embed(
        self,
        input_ids: Tensor,
        speech_ids: Tensor,
        is_speech: Tensor,
        speaker: Tensor | None = None,
        speaker_mask: Tensor | None = None,
    ) -> Tensor:
        """Input vectors [B,S,D] from text ids [B,S], speech groups [B,S,G] and ``is_speech`` [B,S].

        Speech groups are embedded and fused only where ``is_speech``; with a speaker model, the
        positions in ``speaker_mask`` take the projected ``speaker`` [B,Ds] (§2.3).
        """
        embeds = self.backbone.embed_text(input_ids)
        # Runs even when no position is speech (N=0): no host sync, and under DDP every rank's
        # speech parameters stay in the graph.
        fused = self.speech_embedding(speech_ids[is_speech])  # [N,D]
        embeds = embeds.index_put((is_speech,), fused.to(embeds.dtype))
        if self.speaker_projector is not None and speaker is not None and speaker_mask is not None:
            embeds = self.speaker_projector.inject(embeds, speaker, speaker_mask)
        return embeds

    def text_head(self, hidden: Tensor) -> Tensor:
        """[...,D] -> [...,Vt] (Eq. 1)."""
        return self.backbone.lm_head(hidden)

    # ``self.backbone(inputs_embeds, attention_mask, position_ids, past_key_values, use_cache)`` and
    # ``self.speech_head(hidden) -> [...,G,Vs]`` are modules, called directly.

    # -- training ---------------------------------------------------------------------------------
    def forward(self, batch: SLMBatch, return_logits: bool = True) -> SLMOutput:
        """Training step: weighted text + speech loss of ``batch`` (paper Eqs. 6-7 via its labels).

        With ``return_logits=False`` the heads only run at supervised positions and the speech loss
        uses each slot's compact logits (its stream + END/PAD, not all Vs ids), which saves the
        [B,S,Vt] text logits (151k columns for Qwen2.5) and most of the speech ones -- same loss.
        """
        check_batch(self, batch)
        x = self.embed(batch.input_ids, batch.speech_ids, batch.is_speech, batch.speaker, batch.speaker_mask)
        guided = self.cfg.guided.enabled and batch.aligned_text is not None
        out = self.backbone(x, attention_mask=batch.attention_mask, output_attentions=guided)
        hidden = out.hidden  # [B,S,D]
        # Hidden state s predicts position s+1 (shift once, here, for both heads).
        text_targets, speech_targets = batch.text_labels[:, 1:], batch.speech_labels[:, 1:]
        text_rows, speech_rows = masked_positions(text_targets), masked_positions(speech_targets)
        next_steps = F.pad(batch.speech_steps()[:, 1:], (0, 1), value=-1)  # step of position s+1
        text_logits = speech_logits = None
        if return_logits:
            text_logits = self.text_head(hidden)
            speech_logits = self.speech_head.mask_steps(self.speech_head(hidden), next_steps)
            text_sel, speech_sel = text_logits[:, :-1][text_rows], speech_logits[:, :-1][speech_rows]
            speech_sel_targets = speech_targets[speech_rows]
        else:
            prev = hidden[:, :-1]
            text_sel = self.text_head(prev[text_rows])
            speech_sel = self.speech_head.mask_steps(
                self.speech_head.slot_logits(prev[speech_rows]), next_steps[:, :-1][speech_rows]
            )
            speech_sel_targets = self.speech_head.to_local(speech_targets[speech_rows])
        l_text, text_acc = text_loss(text_sel, text_targets[text_rows])
        l_speech = speech_loss(speech_sel, speech_sel_targets)
        losses = {"text": l_text, "speech": l_speech.loss}
        losses.update({f"speech_slot_{g}": v for g, v in enumerate(l_speech.per_slot)})
        loss = losses["lm"] = combine(l_text, l_speech.loss, self.cfg.text_loss_weight, self.cfg.speech_loss_weight)
        if guided:
            assert out.attentions is not None and batch.aligned_text is not None
            losses["guided"] = guided_attention_loss(out.attentions, batch.aligned_text, batch.is_speech, self.cfg.guided)
            loss = loss + self.cfg.guided.weight * losses["guided"]
        return SLMOutput(
            loss=loss,
            losses=losses,
            text_logits=text_logits,
            speech_logits=speech_logits,
            metrics={"text_acc": text_acc, "speech_acc": l_speech.accuracy},
        )


def _out_of_range(ids: Tensor, size: int, allow_ignore: bool = False) -> Tensor | None:
    """The first id of ``ids`` outside [0, size) (``-100`` allowed when ``allow_ignore``), else None."""
    bad = (ids < 0) | (ids >= size)
    if allow_ignore:
        bad &= ids != IGNORE_INDEX
    return ids[bad][0] if bool(bad.any()) else None


def check_batch(model: SLM, batch: SLMBatch) -> None:
    """Validate ``batch`` against ``model`` at the door, with errors that name the bad value."""
    cfg = model.cfg
    if batch.group_size != cfg.group_size:
        raise ValueError(f"batch has speech groups of G={batch.group_size} but SLMConfig.group_size={cfg.group_size}")
    vt, vs = model.text_vocab_size, model.speech_vocab_size
    for name, ids, size, ignore in (
        ("input_ids", batch.input_ids, vt, False),
        ("speech_ids", batch.speech_ids, vs, False),
        ("text_labels", batch.text_labels, vt, True),
        ("speech_labels", batch.speech_labels, vs, True),
    ):
        bad = _out_of_range(ids, size, ignore)
        if bad is not None:
            raise ValueError(f"SLMBatch.{name} holds id {int(bad)} outside [0, {size})")
    if bool((masked_positions(batch.text_labels) & batch.is_speech).any()):
        raise ValueError("SLMBatch.text_labels has a label at a speech position (is_speech=True)")
    if bool((masked_positions(batch.speech_labels) & ~batch.is_speech).any()):
        raise ValueError("SLMBatch.speech_labels has a label at a text position (is_speech=False)")
    labels = batch.speech_labels
    wrong = (labels != IGNORE_INDEX) & ~model.speech_head.can_emit(labels, batch.speech_steps())
    if bool(wrong.any()):
        b, s, g = (int(i) for i in wrong.nonzero()[0])
        raise ValueError(
            f"SLMBatch.speech_labels[{b}, {s}, {g}] = {int(labels[b, s, g])} is outside the stream "
            f"vocabulary slot {g} carries there (Eq. 3)"
        )
    _check_speaker(cfg, batch)


def _check_speaker(cfg: SLMConfig, batch: SLMBatch) -> None:
    """Speaker vector given iff the model is speaker-aware, with a placeholder in every row (§2.3)."""
    if cfg.speaker_dim == 0:
        if batch.speaker is not None:
            raise ValueError("batch has a speaker vector but the model has speaker_dim=0 (not speaker-aware)")
        if bool(batch.speaker_mask.any()):
            raise ValueError("batch has speaker placeholder positions but the model has speaker_dim=0")
        return
    if batch.speaker is None:
        raise ValueError(f"the model is speaker-aware (speaker_dim={cfg.speaker_dim}) but the batch has no speaker")
    if batch.speaker.shape[-1] != cfg.speaker_dim:
        raise ValueError(f"speaker vectors have Ds={batch.speaker.shape[-1]}, the model expects {cfg.speaker_dim}")
    missing = ~batch.speaker_mask.any(-1)
    if bool(missing.any()):
        row = int(missing.nonzero()[0, 0])
        raise ValueError(f"batch row {row} has a speaker vector but no speaker placeholder position")
    if bool((batch.speaker_mask & batch.is_speech).any()):
        raise ValueError("a speaker placeholder position is marked as speech")
