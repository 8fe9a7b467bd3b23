"""Tiny random SLMs and checkpoints for the inference tests.

Speech: K=3 streams of 8 codes (global ids 0..23, END=24, PAD=25); text: a character tokenizer over
lowercase ASCII with the study's named specials. Random weights are enough: every property tested
here (cache == recomputation, batch == single, teacher forcing) holds for any weights.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

from speechlm.data.codes import _tokenizer_facts, tokenizer_fingerprint
from speechlm.data.dataset import DataConfig
from speechlm.data.tasks import TaskConfig
from speechlm.inference.speakers import SpeakerTable
from speechlm.layout.speech import LayoutConfig, SpeechLayout
from speechlm.layout.vocab import TEXT_SPECIALS
from speechlm.model.backbone import BackboneConfig
from speechlm.model.heads import SlotVocab
from speechlm.model.slm import SLM, SLMConfig
from speechlm.text.base import TextTokenizerConfig, build_text_tokenizer
from speechlm.text.char import CharTokenizer
from speechlm.train.build import build_speech_tokenizer
from speechlm.train.checkpoint import CheckpointMeta, save_checkpoint
from speechlm.train.config import RunConfig, TokenizerSource, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
CODEC_YAML = ROOT / "configs" / "codec" / "tiny_coupled_rvq.yaml"
CHARSET = string.ascii_letters + string.digits + string.punctuation + " \n"


def char_tokenizer() -> CharTokenizer:
    return CharTokenizer.from_charset(CHARSET, TEXT_SPECIALS)


def tiny_layout(group_size: int, order: str = "fwi") -> SpeechLayout:
    return SpeechLayout(LayoutConfig(group_size=group_size, order=order, chunk=4), (8, 8, 8), ("p", "c0", "c1"))


def tiny_slm(layout: SpeechLayout, text_vocab: int, seed: int = 0, speaker_dim: int = 0, attn: str = "sdpa") -> SLM:
    torch.manual_seed(seed)
    g = layout.group_size
    cfg = SLMConfig(backbone=BackboneConfig(attn_implementation=attn), group_size=g, speaker_dim=speaker_dim)
    return SLM(cfg, layout.vocab.size, text_vocab, SlotVocab.from_layout(layout, g)).eval()


def bias_speech(model: SLM, token: int, value: float, slots: tuple[int, ...] | None = None) -> None:
    """Add ``value`` to the speech head's logit of global id ``token`` (in ``slots``, default all)."""
    head = model.speech_head
    with torch.no_grad():
        for g in slots if slots is not None else range(head.group_size):
            head.bias[g][head.columns[g] == token] += value


def write_checkpoint(path: Path, group_size: int = 3, speaker_dim: int = 0, seed: int = 0) -> Path:
    """A weights-only checkpoint of a random tiny SLM over the random-init tiny coupled codec."""
    cfg = TrainConfig(
        train=RunConfig(out_dir=path.parent, max_steps=1),
        data=DataConfig(corpus=path / "no-corpus", task=TaskConfig(speaker_aware=speaker_dim > 0)),
        tokenizer=TokenizerSource(config=CODEC_YAML),
        text=TextTokenizerConfig(kind="char", charset=CHARSET),
        layout=LayoutConfig(group_size=group_size),
        model=SLMConfig(group_size=group_size, speaker_dim=speaker_dim),
    )
    codec = build_speech_tokenizer(cfg.tokenizer, torch.device("cpu"))
    text = build_text_tokenizer(cfg.text)
    layout = SpeechLayout(cfg.layout, codec.codebook_sizes, [s.name for s in codec.streams])
    torch.manual_seed(seed)
    model = SLM(cfg.model, layout.vocab.size, text.vocab_size, SlotVocab.from_layout(layout, group_size))
    meta = CheckpointMeta(
        step=1,
        epoch=0,
        position=0,
        tokenizer_fingerprint=tokenizer_fingerprint(codec),
        tokenizer=_tokenizer_facts(codec),
        text_vocab_size=text.vocab_size,
        speech_vocab_size=layout.vocab.size,
    )
    save_checkpoint(path, model=model, config=cfg, meta=meta, text_tokenizer=text, trainer_state=None)
    if speaker_dim:
        gen = torch.Generator().manual_seed(seed)
        SpeakerTable({name: torch.randn(speaker_dim, generator=gen) for name in ("alice", "bob")}).save(path)
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "step_000001")


@pytest.fixture(scope="session")
def speaker_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt_spk") / "step_000001", speaker_dim=8)
