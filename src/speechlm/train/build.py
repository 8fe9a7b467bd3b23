"""Assemble a training run from its config: tokenizers, cached codes, encoded data, the SLM.

Everything here happens before the first step, so every bad input — a missing corpus, a tokenizer
that does not match the stage-1 checkpoint, a stream index the tokenizer lacks, codes missing for a
manifest row, an empty text — fails fast with a message naming it (DESIGN.md §7).
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from speechlm.assets import resolve_asset
from speechlm.data.codes import CodeCache, ensure_code_cache, tokenizer_fingerprint
from speechlm.data.dataset import EncodedExample, SequenceEncoder, SkippedExample, encode_split
from speechlm.data.manifest import Corpus
from speechlm.data.tasks import TASKS, TaskConfig, TaskFormatter, TextPiece
from speechlm.layout.speech import SpeechLayout
from speechlm.model.heads import SlotVocab
from speechlm.model.slm import SLM
from speechlm.text.base import TextTokenizer, build_text_tokenizer, load_text_tokenizer
from speechlm.tokenizers.base import SpeechTokenizer
from speechlm.tokenizers.registry import build_tokenizer, load_tokenizer
from speechlm.train.checkpoint import TEXT_DIR, CheckpointMeta, load_weights, read_meta, resolve_checkpoint
from speechlm.train.config import TokenizerSource, TrainConfig

# A char alphabet also covers plain ASCII, so prompts at inference are not limited to corpus characters.
_ASCII = string.ascii_letters + string.digits + string.punctuation + " \n"


@dataclass
class TrainingSetup:
    """What the loop trains: the model, its encoded data and the facts a checkpoint records."""

    model: SLM
    text_tokenizer: TextTokenizer
    layout: SpeechLayout
    train_examples: list[EncodedExample]
    val_examples: list[EncodedExample]
    skipped: list[SkippedExample]
    fingerprint: str  # speech tokenizer (data.codes.tokenizer_fingerprint)
    tokenizer_facts: dict


def build_speech_tokenizer(src: TokenizerSource, device: torch.device) -> SpeechTokenizer:
    if src.checkpoint is not None:
        return load_tokenizer(resolve_asset(src.checkpoint), device=device)
    with torch.random.fork_rng():  # a random-init tokenizer must not shift the run's RNG stream
        torch.manual_seed(src.seed)
        tok = build_tokenizer(src.load_config())
    return tok.to(device).eval()


def open_corpus(path: Path) -> Corpus:
    if not path.is_dir():
        raise FileNotFoundError(
            f"corpus folder not found: {path} (make one with `speechlm data synth --preset tiny --out {path}`)"
        )
    return Corpus.open(path)


def assemble(
    cfg: TrainConfig,
    device: torch.device,
    *,
    main_process_first: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    show_progress: bool = True,
) -> TrainingSetup:
    """Build everything the loop needs, in the order that fails cheapest first."""
    corpus = open_corpus(cfg.data.corpus)
    check_rows(corpus, cfg)  # empty texts etc. surface before minutes of encoding
    init = resolve_checkpoint(cfg.train.init_from) if cfg.train.init_from is not None else None
    init_meta = read_meta(init) if init is not None else None
    cache = _code_cache(cfg, corpus, device, init_meta, main_process_first, show_progress)
    layout = SpeechLayout(cfg.layout, cache.codebook_sizes, cache.stream_names)
    if init is not None:
        text = load_text_tokenizer(init / TEXT_DIR)  # stage 2 keeps stage 1's text ids
    else:
        text = build_text_tokenizer(cfg.text, [*corpus_texts(corpus, cfg.data.task), _ASCII])
    encoder = SequenceEncoder(text, layout)
    train, skipped = encode_split(corpus, cfg.data.train_split, cfg.data, encoder, cache, repeat=True)
    val: list[EncodedExample] = []
    if cfg.data.val_split is not None:
        val, val_skipped = encode_split(corpus, cfg.data.val_split, cfg.data, encoder, cache)
        skipped += val_skipped
    if not train:
        raise ValueError(f"no training sequences: split {cfg.data.train_split!r} of {corpus.root} gave none for {cfg.data.task.tasks}")
    slots = SlotVocab.from_layout(layout, cfg.model.group_size)
    model = SLM(cfg.model, layout.vocab.size, text.vocab_size, slots).to(device)
    if init is not None:
        load_weights(model, init)
    return TrainingSetup(model, text, layout, train, val, skipped, cache.fingerprint, cache.tokenizer)


def check_rows(corpus: Corpus, cfg: TrainConfig) -> None:
    """Format every row the run will use; a bad row raises ValueError naming its id."""
    formatter = TaskFormatter(cfg.data.task)
    for split in (cfg.data.train_split, cfg.data.val_split):
        if split is None:
            continue
        for task in cfg.data.task.tasks:
            for row in corpus.tts(split) if task in ("tts", "asr") else corpus.qa(split):
                formatter.format(row, task)


def corpus_texts(corpus: Corpus, task: TaskConfig) -> list[str]:
    """Every text piece any task could form from the corpus (all splits): a char tokenizer's alphabet."""
    formatter = TaskFormatter(TaskConfig(tasks=TASKS, speaker_aware=task.speaker_aware, templates=task.templates))
    texts = []
    for row in [*corpus.tts(), *corpus.qa()]:
        for name in ("tts", "asr") if not row.is_qa else ("role_qa", "text"):
            texts += [p.text for p in formatter.format(row, name).pieces if isinstance(p, TextPiece)]
    return texts


def meta_for(setup: TrainingSetup, step: int, epoch: int, position: int) -> CheckpointMeta:
    return CheckpointMeta(
        step=step,
        epoch=epoch,
        position=position,
        tokenizer_fingerprint=setup.fingerprint,
        tokenizer=setup.tokenizer_facts,
        text_vocab_size=setup.text_tokenizer.vocab_size,
        speech_vocab_size=setup.layout.vocab.size,
    )


def _code_cache(
    cfg: TrainConfig,
    corpus: Corpus,
    device: torch.device,
    init_meta: CheckpointMeta | None,
    main_process_first: Callable[[], contextlib.AbstractContextManager],
    show_progress: bool,
) -> CodeCache:
    tok = build_speech_tokenizer(cfg.tokenizer, device)
    # Cheap checks against the tokenizer itself, before it encodes anything.
    SpeechLayout(cfg.layout, tok.codebook_sizes, [s.name for s in tok.streams])
    _check_speaker_width(cfg, tok)
    if init_meta is not None and tokenizer_fingerprint(tok) != init_meta.tokenizer_fingerprint:
        raise ValueError(
            f"tokenizer {cfg.tokenizer} is not the one stage 1 ({cfg.train.init_from}) was trained on "
            f"(fingerprint {tokenizer_fingerprint(tok)[:12]} != {init_meta.tokenizer_fingerprint[:12]})"
        )
    splits = tuple(s for s in (cfg.data.train_split, cfg.data.val_split) if s is not None)
    with main_process_first():  # rank 0 encodes; the others then open its cache
        cache = ensure_code_cache(
            corpus,
            tok,
            cfg.data.cache_dir,
            splits=splits,
            max_batch_seconds=cfg.data.encode_batch_seconds,
            show_progress=show_progress,
        )
    del tok
    return cache


def _check_speaker_width(cfg: TrainConfig, tok: SpeechTokenizer) -> None:
    if not cfg.data.task.speaker_aware:
        return
    name = tok.tokenizer_config.name if tok.tokenizer_config is not None else type(tok).__name__
    if tok.speaker_dim == 0:
        raise ValueError(
            f"data.task.speaker_aware needs speaker vectors, but tokenizer {name!r} has none "
            "(speaker_dim 0); use a decoupled tokenizer or set speaker_aware: false"
        )
    if cfg.model.speaker_dim != tok.speaker_dim:
        raise ValueError(f"model.speaker_dim={cfg.model.speaker_dim} but tokenizer {name!r} gives {tok.speaker_dim}-d speaker vectors")
