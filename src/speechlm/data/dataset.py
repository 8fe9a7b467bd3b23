"""SLM training data: formatted examples -> id tensors -> padded :class:`SLMBatch` es, length-bucketed.

Every example is tokenised once, up front, from the cached codes (``data.codes``): text pieces
through the text tokenizer, speech pieces through the :class:`SpeechLayout` (FWI/CWI + MTP groups,
END after the last token), the speaker piece as the placeholder id. One sequence position holds
either one text token or one speech *group* of G ids (study §2.2: each hidden state reads a fused
group and predicts the next one), so MTP-g's speech sequence is g times shorter than NTP's (g = G).

Batches are cut by :class:`BucketBatchSampler`: shuffled, then sorted by length inside windows of
a few dozen batches so padding stays small, then the batch order is shuffled again. The batch plan
of an epoch is a pure function of ``(seed, epoch)``, which is what makes ``--resume`` exact, and it is
split across data-parallel ranks by striding so every rank takes the same number of steps.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from speechlm.data.codes import CodeCache, UttCodes, speaker_means
from speechlm.data.manifest import Corpus, Utterance
from speechlm.data.tasks import (
    SPEECH_TASKS,
    FormattedExample,
    SpeakerPiece,
    TaskConfig,
    TaskFormatter,
    TextPiece,
)
from speechlm.layout.speech import SpeechLayout
from speechlm.layout.vocab import SPEAKER_PLACEHOLDER
from speechlm.model.batch import IGNORE_INDEX as IGNORE
from speechlm.model.batch import SLMBatch
from speechlm.text.base import TextTokenizer


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is batched (YAML section ``data``)."""

    corpus: Path  # a corpus folder made by `speechlm data synth` (or converted to its format)
    cache_dir: Path = Path("runs/cache/codes")  # code caches, one sub-folder per tokenizer fingerprint
    train_split: Literal["train", "val", "test"] = "train"
    val_split: Literal["train", "val", "test"] | None = "val"
    task: TaskConfig = field(default_factory=TaskConfig)
    # Speaker vector for the placeholder (§2.3): the utterance's own (the reference code's per-item
    # spk_emb) or the mean over the speaker's training utterances (a steadier role timbre).
    speaker_vector: Literal["utterance", "speaker_mean"] = "utterance"
    batch_size: int = 16  # sequences per micro-batch (study Appendix C: batch size 16)
    max_tokens: int = 0  # > 0: also cap padded positions (B x S) per micro-batch
    max_positions: int = 4096  # longer sequences are skipped and reported, never silently cut
    bucket_batches: int = 32  # batches per length-sorting window
    encode_batch_seconds: float = 60.0  # audio seconds per tokenizer call when building the cache

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_positions", "bucket_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_tokens < 0:
            raise ValueError(f"data.max_tokens must be >= 0 (0 = no cap), got {self.max_tokens}")
        if self.encode_batch_seconds <= 0:
            raise ValueError(f"data.encode_batch_seconds must be > 0, got {self.encode_batch_seconds}")


@dataclass(frozen=True)
class EncodedExample:
    """One tokenised sequence of S positions (G = layout group size)."""

    id: str
    input_ids: torch.Tensor  # [S] text ids; the text pad id at speech positions
    speech_ids: torch.Tensor  # [S, G] global speech ids; speech PAD at text positions
    is_speech: torch.Tensor  # [S] bool
    text_labels: torch.Tensor  # [S] input id where the text token is trained, else -100
    speech_labels: torch.Tensor  # [S, G] speech id where trained, else -100 (PAD after END is never trained)
    speaker_mask: torch.Tensor  # [S] bool, the speaker placeholder position
    speaker: torch.Tensor | None  # [Ds] float32
    aligned_text: torch.Tensor  # [S] bool, the {text} field's tokens: what the speech says (guided attention)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


class SequenceEncoder:
    """Turns a :class:`FormattedExample` (+ its cached codes) into an :class:`EncodedExample`."""

    def __init__(self, text_tokenizer: TextTokenizer, layout: SpeechLayout) -> None:
        self.text = text_tokenizer
        self.layout = layout
        self.speaker_id = text_tokenizer.special_id(SPEAKER_PLACEHOLDER)

    def encode(
        self, example: FormattedExample, codes: UttCodes | None, speaker: torch.Tensor | None
    ) -> EncodedExample:
        spans: list[EncodedExample] = []
        for piece in example.pieces:
            if isinstance(piece, TextPiece):
                spans.append(self._text_span(self.text.encode(piece.text), piece.loss, aligned=piece.aligned))
            elif isinstance(piece, SpeakerPiece):
                if speaker is None:
                    raise ValueError(f"example {example.id!r} has a speaker placeholder but no speaker vector")
                spans.append(self._text_span([self.speaker_id], loss=False, speaker_slot=True))
            else:
                if codes is None:
                    raise ValueError(f"example {example.id!r} has a speech slot but no cached codes")
                spans.append(self._speech_span(self._groups(codes), piece.loss))
        last_loss = bool(example.pieces) and getattr(example.pieces[-1], "loss", False)
        spans.append(self._text_span([self.text.eos_id], last_loss))  # the response ends with EOS (reference code)
        return EncodedExample(
            id=example.id,
            input_ids=torch.cat([sp.input_ids for sp in spans]),
            speech_ids=torch.cat([sp.speech_ids for sp in spans]),
            is_speech=torch.cat([sp.is_speech for sp in spans]),
            text_labels=torch.cat([sp.text_labels for sp in spans]),
            speech_labels=torch.cat([sp.speech_labels for sp in spans]),
            speaker_mask=torch.cat([sp.speaker_mask for sp in spans]),
            speaker=speaker,
            aligned_text=torch.cat([sp.aligned_text for sp in spans]),
        )

    def _text_span(
        self, ids: Sequence[int], loss: bool, speaker_slot: bool = False, aligned: bool = False
    ) -> EncodedExample:
        """``n`` text positions: speech PAD in every slot, no speech loss."""
        n, G = len(ids), self.layout.group_size
        t = torch.tensor(ids, dtype=torch.long)
        return EncodedExample(
            id="",
            input_ids=t,
            speech_ids=torch.full((n, G), self.layout.vocab.pad_id, dtype=torch.long),
            is_speech=torch.zeros(n, dtype=torch.bool),
            text_labels=t if loss else torch.full((n,), IGNORE, dtype=torch.long),
            speech_labels=torch.full((n, G), IGNORE, dtype=torch.long),
            speaker_mask=torch.full((n,), speaker_slot, dtype=torch.bool),
            speaker=None,
            aligned_text=torch.full((n,), aligned, dtype=torch.bool),
        )

    def _speech_span(self, groups: torch.Tensor, loss: bool) -> EncodedExample:
        """``J`` speech positions from ``groups [J, G]``: text pad as input id, no text loss."""
        n = groups.shape[0]
        trained = groups.masked_fill(groups == self.layout.vocab.pad_id, IGNORE)  # PAD after END: no loss
        return EncodedExample(
            id="",
            input_ids=torch.full((n,), self.text.pad_id, dtype=torch.long),
            speech_ids=groups,
            is_speech=torch.ones(n, dtype=torch.bool),
            text_labels=torch.full((n,), IGNORE, dtype=torch.long),
            speech_labels=trained if loss else torch.full_like(groups, IGNORE),
            speaker_mask=torch.zeros(n, dtype=torch.bool),
            speaker=None,
            aligned_text=torch.zeros(n, dtype=torch.bool),
        )

    def _groups(self, codes: UttCodes) -> torch.Tensor:
        """Codes ``[K_all, T]`` -> this utterance's speech groups ``[J, G]``, END group included."""
        grouped = self.layout.encode(codes.codes[None], torch.tensor([codes.num_frames]))
        return grouped.ids[0, : int(grouped.lengths[0])]


@dataclass(frozen=True)
class SkippedExample:
    id: str
    reason: str


def encode_split(
    corpus: Corpus,
    split: str,
    cfg: DataConfig,
    encoder: SequenceEncoder,
    cache: CodeCache | None,
    *,
    repeat: bool = False,
) -> tuple[list[EncodedExample], list[SkippedExample]]:
    """Every example of the configured task mixture for ``split``.

    ``repeat`` (the training split): each task's examples appear ``cfg.task.repeat[task]`` times.
    Rows that cannot be used (no cached codes, empty text ...) raise before training starts; sequences
    longer than ``max_positions`` are skipped (once) and returned for the caller to report.
    """
    formatter = TaskFormatter(cfg.task)
    means = speaker_means(cache, corpus) if cache is not None and cfg.speaker_vector == "speaker_mean" else {}
    examples: list[EncodedExample] = []
    skipped: list[SkippedExample] = []
    for task in cfg.task.tasks:
        rows: list[Utterance] = corpus.tts(split) if task in ("tts", "asr") else corpus.qa(split)
        for row in rows:
            formatted = formatter.format(row, task)
            codes = None
            if task in SPEECH_TASKS or formatted.has_speaker:
                if cache is None:
                    raise ValueError(f"task {task!r} needs speech codes but no code cache was given")
                codes = cache.get(row.id)
            speaker = speaker_vector(row, codes, means) if formatted.has_speaker else None
            example = encoder.encode(formatted, codes if task in SPEECH_TASKS else None, speaker)
            if example.length > cfg.max_positions:
                skipped.append(SkippedExample(example.id, f"{example.length} positions > max_positions"))
                continue
            examples.extend([example] * (cfg.task.repeat.get(task, 1) if repeat else 1))
    return examples, skipped


def speaker_vector(row: Utterance, codes: UttCodes | None, means: dict[str, torch.Tensor]) -> torch.Tensor:
    """The ``[Ds]`` timbre vector a row is trained with: its speaker's mean when ``means`` has one
    (``data.speaker_vector: speaker_mean``), else the utterance's own from its codes."""
    if row.speaker in means:
        return means[row.speaker]
    if codes is None or codes.speaker is None:
        raise ValueError(
            f"utterance {row.id!r} needs a speaker vector but its tokenizer gives none (speaker_dim 0); "
            "use a tokenizer with a speaker vector or set data.task.speaker_aware: false"
        )
    return codes.speaker


def collate(examples: Sequence[EncodedExample], *, text_pad_id: int, speech_pad_id: int) -> SLMBatch:
    """Right-pad a list of examples into one :class:`SLMBatch` ``[B, S(, G)]``."""
    if not examples:
        raise ValueError("collate: empty list of examples")
    B, S = len(examples), max(e.length for e in examples)
    G = examples[0].speech_ids.shape[1]
    input_ids = torch.full((B, S), text_pad_id, dtype=torch.long)
    speech_ids = torch.full((B, S, G), speech_pad_id, dtype=torch.long)
    is_speech = torch.zeros(B, S, dtype=torch.bool)
    attention_mask = torch.zeros(B, S, dtype=torch.long)
    text_labels = torch.full((B, S), IGNORE, dtype=torch.long)
    speech_labels = torch.full((B, S, G), IGNORE, dtype=torch.long)
    speaker_mask = torch.zeros(B, S, dtype=torch.bool)
    aligned_text = torch.zeros(B, S, dtype=torch.bool)
    for b, e in enumerate(examples):
        n = e.length
        input_ids[b, :n] = e.input_ids
        speech_ids[b, :n] = e.speech_ids
        is_speech[b, :n] = e.is_speech
        attention_mask[b, :n] = 1
        text_labels[b, :n] = e.text_labels
        speech_labels[b, :n] = e.speech_labels
        speaker_mask[b, :n] = e.speaker_mask
        aligned_text[b, :n] = e.aligned_text
    vectors = [e.speaker for e in examples if e.speaker is not None]
    speaker = None
    if vectors:
        # Rows without a placeholder (e.g. ASR beside speaker-aware TTS) get zeros; they are never read.
        zeros = torch.zeros_like(vectors[0])
        speaker = torch.stack([e.speaker if e.speaker is not None else zeros for e in examples])
    return SLMBatch(
        input_ids=input_ids,
        speech_ids=speech_ids,
        is_speech=is_speech,
        attention_mask=attention_mask,
        text_labels=text_labels,
        speech_labels=speech_labels,
        speaker=speaker,
        speaker_mask=speaker_mask,
        aligned_text=aligned_text,
        ids=[e.id for e in examples],
    )


class BucketBatchSampler:
    """Length-bucketed batches of indices; the plan of an epoch is a pure function of (seed, epoch)."""

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        max_tokens: int = 0,
        bucket_batches: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not lengths:
            raise ValueError("no training examples: the task mixture produced an empty dataset")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        if max_tokens and max(lengths) > max_tokens:
            raise ValueError(f"data.max_tokens={max_tokens} is below the longest sequence ({max(lengths)} positions)")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.bucket_batches = bucket_batches
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        if len(self.plan(0)) == 0:
            raise ValueError(
                f"{len(lengths)} examples make fewer batches than the {num_replicas} data-parallel processes"
            )

    def plan(self, epoch: int) -> list[list[int]]:
        """This rank's batches for ``epoch``, in order."""
        rng = random.Random(self.seed * 100_003 + epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        window = self.batch_size * self.bucket_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: self.lengths[i])
            batches.extend(self._cut(chunk))
        if self.shuffle:
            rng.shuffle(batches)
        usable = len(batches) - len(batches) % self.num_replicas  # every rank takes the same steps
        return batches[self.rank : usable : self.num_replicas]

    def _cut(self, chunk: list[int]) -> list[list[int]]:
        batches, batch, longest = [], [], 0
        for i in chunk:
            longest_if = max(longest, self.lengths[i])
            too_many = len(batch) >= self.batch_size
            too_long = self.max_tokens and longest_if * (len(batch) + 1) > self.max_tokens
            if batch and (too_many or too_long):
                batches.append(batch)
                batch, longest_if = [], self.lengths[i]
            batch.append(i)
            longest = longest_if
        if batch:
            batches.append(batch)
        return batches

    def stream(self, epoch: int = 0, position: int = 0) -> Iterator[tuple[int, int, list[int]]]:
        """Endless ``(epoch, position, batch)``; start at ``(epoch, position)`` to resume exactly."""
        while True:
            plan = self.plan(epoch)
            for i in range(position, len(plan)):
                yield epoch, i, plan[i]
            epoch, position = epoch + 1, 0
