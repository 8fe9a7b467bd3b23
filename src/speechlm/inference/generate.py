"""KV-cached generation for the SLM: an optional text answer, then speech groups of g tokens per step.

One decoding loop serves TTS and spoken QA, NTP and MTP (paper §2.2, Fig. 2):

    prefill(prompt)                      one backbone call over the (left-padded) prompts -> KV cache
    repeat step():
        text items    language head (Eq. 1) -> next text id; "[ua]"/EOS/budget -> speech phase
        speech items  speech head (Eqs. 2-3) -> one group of G ids (stream masks, repetition penalty)
                      END in the group -> done (finished); length limit -> done (failed)
        the chosen ids become ONE input position: a text embedding, or the G speech embeddings
        fused into one vector (Eq. 4) -- so MTP needs 1/g of NTP's speech steps
    GenerationOutput(text, codes [B,K,T], lengths, finished, steps, seconds)

QA follows the study's answer format ``[ta]{text}[ua]{speech}`` (Appendix G.3): the prompt ends with
``[ta]``, the model writes the text answer and then ``[ua]``, whose position's hidden state starts
the speech. TTS prompts end with ``[ua]`` and start in the speech phase. The text phase always ends
in speech: an EOS, or a text answer longer than ``max_text_tokens``, is replaced by ``[ua]``.

Batches decode in lock-step: all items take step t together, an item that is done feeds a PAD
group at a masked position (attention 0), so its codes are exactly those it would get alone.

**Length limit.** A generation that never emits END is cut at
``max_frames = ceil(frame_rate * (seconds_per_char * len(text) + extra_seconds))``: with the defaults
0.15 s/char + 1 s, about twice the length of speech read at a normal ~13-15 characters/s, so a
model that is merely slow still finishes while one that loops is stopped and reported
(``finished = False``). The frame budget becomes ``ceil(max_frames * K / G)`` speech steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache

from speechlm.inference.sampling import SamplingConfig, build_processors, choose
from speechlm.layout.speech import SpeechLayout
from speechlm.layout.vocab import SPEECH_BEGIN
from speechlm.model.slm import SLM
from speechlm.text.base import TextTokenizer

TEXT, SPEECH, DONE = 0, 1, 2  # per-item phase


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings (YAML section ``generation``). Defaults: the study's greedy + penalty 1.2."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    max_text_tokens: int = 64  # QA: text-answer budget before "[ua]" is forced
    seconds_per_char: float = 0.15  # speech length limit, see the module docstring
    extra_seconds: float = 1.0
    stop_at_end: bool = True  # False masks END: every item runs to its limit (decoding benchmark)
    kv_cache: bool = True  # False recomputes the whole prefix every step (reference for tests)
    seed: int = 0  # sampling only

    def __post_init__(self) -> None:
        if self.max_text_tokens < 0:
            raise ValueError(f"max_text_tokens must be >= 0, got {self.max_text_tokens}")
        if self.seconds_per_char < 0 or self.extra_seconds < 0 or self.seconds_per_char + self.extra_seconds <= 0:
            raise ValueError(
                f"seconds_per_char ({self.seconds_per_char}) and extra_seconds ({self.extra_seconds}) "
                "must be >= 0 and not both 0"
            )

    def max_frames(self, num_chars: int, frame_rate: float) -> int:
        """Speech length limit in frames for a text of ``num_chars`` characters."""
        return max(1, math.ceil(frame_rate * (self.seconds_per_char * num_chars + self.extra_seconds)))


@dataclass(frozen=True)
class PromptItem:
    """One prompt: text ids up to where the model starts writing (``data.tasks.TaskFormatter.prompt``)."""

    ids: tuple[int, ...]  # [P] text ids, the speaker placeholder included
    max_frames: int  # speech length limit (GenerationConfig.max_frames)
    text_first: bool = False  # QA: write the text answer, then "[ua]" and speech; TTS: speech at once
    speaker_position: int | None = None  # index into ids of the placeholder (§2.3)
    speaker: Tensor | None = None  # [Ds] speaker vector for the placeholder


@dataclass(frozen=True)
class PromptBatch:
    """Prompts left-padded to one length, so every item's next position is the last column."""

    input_ids: Tensor  # [B,P] text ids, left-padded with the text pad id
    attention_mask: Tensor  # [B,P] long, 1 = real prompt position
    speaker_mask: Tensor  # [B,P] bool, the speaker placeholder position
    text_first: Tensor  # [B] bool
    max_frames: Tensor  # [B] long
    speaker: Tensor | None = None  # [B,Ds]

    @classmethod
    def from_items(cls, items: Sequence[PromptItem], pad_id: int) -> PromptBatch:
        if not items:
            raise ValueError("no prompts to generate from")
        for i, item in enumerate(items):
            if not item.ids:
                raise ValueError(f"prompt {i} is empty")
            if item.max_frames < 1:
                raise ValueError(f"prompt {i}: max_frames must be >= 1, got {item.max_frames}")
            if (item.speaker is None) != (item.speaker_position is None):
                raise ValueError(f"prompt {i}: a speaker vector needs a placeholder position and vice versa")
        with_speaker = [item.speaker is not None for item in items]
        if any(with_speaker) and not all(with_speaker):
            raise ValueError("either every prompt of a batch has a speaker vector or none has")
        B, P = len(items), max(len(item.ids) for item in items)
        input_ids = torch.full((B, P), pad_id, dtype=torch.long)
        attention = torch.zeros(B, P, dtype=torch.long)
        speaker_mask = torch.zeros(B, P, dtype=torch.bool)
        for b, item in enumerate(items):
            start = P - len(item.ids)
            input_ids[b, start:] = torch.tensor(item.ids)
            attention[b, start:] = 1
            if item.speaker_position is not None:
                speaker_mask[b, start + item.speaker_position] = True
        return cls(
            input_ids=input_ids,
            attention_mask=attention,
            speaker_mask=speaker_mask,
            text_first=torch.tensor([item.text_first for item in items]),
            max_frames=torch.tensor([item.max_frames for item in items]),
            speaker=torch.stack([item.speaker for item in items]).float() if all(with_speaker) else None,
        )


@dataclass(frozen=True)
class GenerationOutput:
    text: list[str]  # [B] text answers ("" for items that started in the speech phase)
    codes: Tensor  # [B,K,T] codes of the modelled streams (layout order), 0 past lengths
    lengths: Tensor  # [B] frames
    finished: Tensor  # [B] bool: True = stopped at END, False = cut at the length limit
    steps: int  # LM decoding steps taken after the prompt (the batch's longest item)
    seconds: float  # wall time, prefill included


@dataclass
class DecodeState:
    """Everything that changes during decoding. Buffers are preallocated to the longest possible
    sequence, so a step costs the same at position 10 and at position 2,000."""

    input_ids: Tensor  # [B,Lmax] text ids of every position (pad at speech positions)
    speech_ids: Tensor  # [B,Lmax,G] speech groups of every position (PAD at text positions)
    is_speech: Tensor  # [B,Lmax] bool
    attention_mask: Tensor  # [B,Lmax] long; 0 = left padding or a position after the item was done
    speaker_mask: Tensor  # [B,Lmax] bool
    speaker: Tensor | None  # [B,Ds]
    length: int  # L: positions filled so far
    cache: DynamicCache | None  # KV cache of positions 0..L-1 (None when kv_cache=False)
    hidden: Tensor  # [B,D] hidden state of position L-1: it predicts position L
    phase: Tensor  # [B] long: TEXT, SPEECH or DONE
    text_ids: Tensor  # [B,max_text_tokens] emitted answer ids, -1 = none
    num_text: Tensor  # [B]
    groups: Tensor  # [B,Jmax,G] emitted speech groups, PAD after the last
    num_groups: Tensor  # [B]
    max_groups: Tensor  # [B] speech-step budget from max_frames
    finished: Tensor  # [B] bool, END seen
    history: Tensor  # [B,steps_max*G] speech ids chosen at each step (-1 = none), for the penalty
    steps: int = 0

    @property
    def done(self) -> bool:
        return bool((self.phase == DONE).all())


class Generator:
    """Owns the KV cache and step state of one batched generation with an :class:`SLM`."""

    def __init__(
        self,
        model: SLM,
        layout: SpeechLayout,
        text: TextTokenizer,
        cfg: GenerationConfig | None = None,
        frame_rate: float | None = None,
    ) -> None:
        """``frame_rate`` (the codec's frames/s), when given, tightens a QA item's speech limit to the
        length rule applied to the text answer it actually wrote (its prompt's ``max_frames`` is a cap)."""
        if model.cfg.group_size != layout.group_size:
            raise ValueError(f"model group_size {model.cfg.group_size} != layout group_size {layout.group_size}")
        if model.speech_vocab_size != layout.vocab.size:
            raise ValueError(f"model speech vocabulary {model.speech_vocab_size} != layout vocabulary {layout.vocab.size}")
        self.model, self.layout, self.text = model, layout, text
        self.cfg = cfg or GenerationConfig()
        self.frame_rate = frame_rate
        self.speech_begin = text.special_id(SPEECH_BEGIN)
        vocab = layout.vocab
        # When the head gives each slot only its own stream's ids (Eq. 3), decode in its compact
        # [G, W] columns (W = |stream| + END + PAD) instead of scattering to the whole [G, Vs]
        # vocabulary: the mask, penalty and argmax then touch K times fewer logits per step.
        head = model.speech_head
        self._columns: Tensor | None = None if head.full_vocab else head.columns  # [G,W] global ids
        self._speech_procs = build_processors(
            self.cfg.sampling,
            exempt=(vocab.end_id, vocab.pad_id),
            frame_tokens=layout.num_streams,
            columns=None if self._columns is None else self._columns.cpu(),
            vocab_size=None if self._columns is None else vocab.size,
        )
        # Text answers are short: the penalty looks at the whole answer (window 0).
        self._text_procs = build_processors(replace(self.cfg.sampling, penalty_window=0))
        masks = _periodic_masks(layout, self.cfg.stop_at_end)  # [period,G,V]
        if self._columns is not None:  # the same masks read at each slot's columns; unused columns never
            masks = torch.cat([masks, masks.new_zeros(*masks.shape[:-1], 1)], -1)
            masks = masks.gather(-1, self._columns.cpu().expand(masks.shape[0], -1, -1))  # [period,G,W]
        self._masks = masks
        self._rng: torch.Generator | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- the loop ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: PromptBatch) -> GenerationOutput:
        start = time.perf_counter()
        state = self.prefill(prompts)
        while not state.done:
            self.step(state)
        out = self.finish(state)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return replace(out, seconds=time.perf_counter() - start)

    @torch.inference_mode()
    def prefill(self, prompts: PromptBatch) -> DecodeState:
        """Run the prompts through the backbone once and set up the step state."""
        dev, G = self.device, self.layout.group_size
        B, P = prompts.input_ids.shape
        K, vocab = self.layout.num_streams, self.layout.vocab
        max_groups = (prompts.max_frames.to(dev) * K + G - 1) // G
        text_budget = torch.where(prompts.text_first.to(dev), self.cfg.max_text_tokens + 1, 0)
        steps_max = int((text_budget + max_groups).max())
        L = P + steps_max
        state = DecodeState(
            input_ids=torch.full((B, L), self.text.pad_id, dtype=torch.long, device=dev),
            speech_ids=torch.full((B, L, G), vocab.pad_id, dtype=torch.long, device=dev),
            is_speech=torch.zeros(B, L, dtype=torch.bool, device=dev),
            attention_mask=torch.zeros(B, L, dtype=torch.long, device=dev),
            speaker_mask=torch.zeros(B, L, dtype=torch.bool, device=dev),
            speaker=None if prompts.speaker is None else prompts.speaker.to(dev, self._dtype),
            length=P,
            cache=DynamicCache() if self.cfg.kv_cache else None,
            hidden=torch.empty(0),
            phase=torch.where(prompts.text_first.to(dev), TEXT, SPEECH),
            text_ids=torch.full((B, self.cfg.max_text_tokens), -1, dtype=torch.long, device=dev),
            num_text=torch.zeros(B, dtype=torch.long, device=dev),
            groups=torch.full((B, int(max_groups.max()), G), vocab.pad_id, dtype=torch.long, device=dev),
            num_groups=torch.zeros(B, dtype=torch.long, device=dev),
            max_groups=max_groups,
            finished=torch.zeros(B, dtype=torch.bool, device=dev),
            history=torch.full((B, steps_max * G), -1, dtype=torch.long, device=dev),
        )
        state.input_ids[:, :P] = prompts.input_ids.to(dev)
        state.attention_mask[:, :P] = prompts.attention_mask.to(dev)
        state.speaker_mask[:, :P] = prompts.speaker_mask.to(dev)
        state.hidden = self._forward(state, start=0)
        self._masks = self._masks.to(dev)
        if self.cfg.sampling.do_sample:
            self._rng = torch.Generator(device=dev).manual_seed(self.cfg.seed)
        return state

    @torch.inference_mode()
    def step(self, state: DecodeState) -> None:
        """Choose every active item's next text token or speech group, then (unless every item is
        done) run the backbone on that one new position."""
        L = state.length
        assert L < state.input_ids.shape[1], "decoding ran past its preallocated length (budgets prevent this)"
        new_speech = state.phase == SPEECH  # the new position holds a speech group unless it is a text token
        text_rows = (state.phase == TEXT).nonzero().squeeze(-1)
        speech_rows = new_speech.nonzero().squeeze(-1)
        real = state.phase != DONE  # items that take a real position this step
        if text_rows.numel():
            self._text_step(state, text_rows)
        if speech_rows.numel():
            self._speech_step(state, speech_rows)
        state.is_speech[:, L] = new_speech | ~real  # done items feed a (masked) PAD group
        state.attention_mask[:, L] = real.long()
        state.length, state.steps = L + 1, state.steps + 1
        if not state.done:
            state.hidden = self._forward(state, start=L)

    def finish(self, state: DecodeState) -> GenerationOutput:
        """Codes of the modelled streams (truncated at the first END) and the decoded text answers."""
        frames = self.layout.decode(self._whole_chunks(state.groups))
        texts = [self.text.decode([int(i) for i in row if i >= 0], skip_specials=True).strip() for row in state.text_ids.cpu()]
        return GenerationOutput(
            text=texts,
            codes=frames.codes,
            lengths=frames.lengths,
            finished=state.finished.clone(),
            steps=state.steps,
            seconds=0.0,
        )

    def _whole_chunks(self, groups: Tensor) -> Tensor:
        """CWI only: cut each item back to its last whole chunk.

        While decoding, every chunk is taken as full (its width is unknown until the end), but the
        layout's inverse reads a shorter final chunk as a narrower one; so a generation that stops
        inside a chunk keeps its whole chunks only (at most ``chunk - 1`` frames lost; the study
        prefers FWI anyway, Appendix E.3). FWI groups pass through unchanged.
        """
        if self.layout.cfg.order != "cwi":
            return groups
        B, J, G = groups.shape
        vocab, span = self.layout.vocab, self.layout.cfg.chunk * self.layout.num_streams
        flat = groups.reshape(B, J * G).clone()
        stop = (flat == vocab.end_id) | (flat == vocab.pad_id)
        index = torch.arange(J * G, device=flat.device).expand(B, -1)
        length = torch.where(stop, index, J * G).amin(-1)
        keep = length // span * span
        flat[index >= keep[:, None]] = vocab.pad_id
        return flat.reshape(B, J, G)

    # -- pieces -----------------------------------------------------------------------------------
    def _text_step(self, state: DecodeState, rows: Tensor) -> None:
        L = state.length
        logits = self.model.text_head(state.hidden[rows])[:, None, :]  # [n,1,Vt]
        ids = choose(logits, state.text_ids[rows], self._text_procs, self.cfg.sampling.do_sample, self._rng)[:, 0]
        count = state.num_text[rows]
        to_speech = (ids == self.speech_begin) | (ids == self.text.eos_id) | (count >= self.cfg.max_text_tokens)
        keep = rows[~to_speech]
        state.text_ids[keep, state.num_text[keep]] = ids[~to_speech]
        state.num_text[keep] += 1
        # "[ua]" ends the text answer; its position's hidden state then predicts the first group.
        state.input_ids[rows, L] = torch.where(to_speech, self.speech_begin, ids)
        state.phase[rows[to_speech]] = SPEECH
        if self.frame_rate is not None:
            for row in rows[to_speech].tolist():
                self._limit_to_answer(state, row)

    def _limit_to_answer(self, state: DecodeState, row: int) -> None:
        """Apply the length rule to the text answer item ``row`` has just finished."""
        assert self.frame_rate is not None
        answer = self.text.decode([int(i) for i in state.text_ids[row] if i >= 0], skip_specials=True).strip()
        frames = self.cfg.max_frames(len(answer), self.frame_rate)
        groups = -(-frames * self.layout.num_streams // self.layout.group_size)
        state.max_groups[row] = min(int(state.max_groups[row]), groups)

    def _speech_step(self, state: DecodeState, rows: Tensor) -> None:
        L, G, end, pad = state.length, self.layout.group_size, self.layout.vocab.end_id, self.layout.vocab.pad_id
        n_groups = state.num_groups[rows]
        head = self.model.speech_head
        hidden = state.hidden[rows]
        logits = (head(hidden) if self._columns is None else head.slot_logits(hidden)).float()  # [n,G,V] or [n,G,W]
        logits = logits.masked_fill(~self._masks[n_groups % self._masks.shape[0]], float("-inf"))
        # Only the penalty window is read (constant work per step, however long the speech).
        window = self.cfg.sampling.penalty_window * self.layout.num_streams
        history = state.history[rows, max(0, state.steps * G - window) if window else 0 : state.steps * G]
        ids = choose(logits, history, self._speech_procs, self.cfg.sampling.do_sample, self._rng)  # [n,G]
        if self._columns is not None:  # compact column -> global speech id
            ids = self._columns[torch.arange(G, device=ids.device), ids]
        # Everything after the first END of a group is PAD (layout.mtp.group's convention).
        after_end = (ids == end).long().cumsum(-1) - (ids == end).long() > 0
        ids = ids.masked_fill(after_end, pad)
        ended = (ids == end).any(-1)
        state.groups[rows, n_groups] = ids
        state.num_groups[rows] = n_groups + 1
        state.history[rows, state.steps * G : (state.steps + 1) * G] = ids
        state.speech_ids[rows, L] = ids
        state.finished[rows] |= ended
        out_of_budget = n_groups + 1 >= state.max_groups[rows]
        state.phase[rows[ended | out_of_budget]] = DONE

    def _forward(self, state: DecodeState, start: int) -> Tensor:
        """Hidden state [B,D] of position ``state.length - 1``; runs positions ``start..`` with the cache,
        or the whole prefix without it."""
        end = state.length
        if state.cache is None:
            start = 0
        mask = state.attention_mask[:, :end]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, start:end]  # left padding shifts RoPE positions
        embeds = self.model.embed(
            state.input_ids[:, start:end],
            state.speech_ids[:, start:end],
            state.is_speech[:, start:end],
            state.speaker,
            state.speaker_mask[:, start:end],
        )
        out = self.model.backbone(
            embeds, attention_mask=mask, position_ids=positions, past_key_values=state.cache, use_cache=state.cache is not None
        )
        return out.hidden[:, -1]


def _periodic_masks(layout: SpeechLayout, stop_at_end: bool) -> Tensor:
    """``[period, G, V]``: the ids each slot may emit at speech step j is row ``j % period``.

    A slot's stream repeats every ``period`` groups (FWI: K tokens; CWI: one chunk of K streams,
    taken as full since the length is not known while decoding), so the masks are built once. PAD
    is never generated (it only fills a group after END and carries no loss); END is masked too when
    ``stop_at_end`` is off.
    """
    K, G = layout.num_streams, layout.group_size
    cycle = K if layout.cfg.order == "fwi" else K * layout.cfg.chunk
    period = cycle // math.gcd(cycle, G)
    masks = layout.allowed_mask(torch.arange(period))  # [period,G,V]
    masks[..., layout.vocab.pad_id] = False
    if not stop_at_end:
        masks[..., layout.vocab.end_id] = False
    return masks
