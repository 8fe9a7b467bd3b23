"""Guided attention (model.guided): the diagonal charge, its direction per task, and its place in the SLM loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_batch, make_model

from speechlm.model.backbone import BackboneConfig
from speechlm.model.guided import GuidedAttentionConfig, diagonal_penalty, guided_attention_loss
from speechlm.model.slm import SLMConfig

EAGER = BackboneConfig(attn_implementation="eager")
ON = GuidedAttentionConfig(weight=1.0, layers=(1,), heads=2)


def _row(text: list[int], speech: list[int], size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    aligned, is_speech = torch.zeros(1, size, dtype=torch.bool), torch.zeros(1, size, dtype=torch.bool)
    aligned[0, text], is_speech[0, speech] = True, True
    return aligned, is_speech


def test_tts_row_speech_asks_text_answers_on_the_diagonal():
    aligned, is_speech = _row([1, 2, 3], [6, 7, 8, 9, 10])
    charge, queries = diagonal_penalty(aligned, is_speech, sigma=0.2)
    assert queries[0].nonzero().flatten().tolist() == [6, 7, 8, 9, 10]
    # First speech step on the first character, last on the last: no charge; the far corner: nearly 1.
    assert charge[0, 6, 1] == 0 and charge[0, 10, 3] == 0 and charge[0, 8, 2] == 0
    assert charge[0, 6, 3] > 0.99 and charge[0, 10, 1] > 0.99
    # Every key outside the sentence (prompt, earlier speech) costs the full charge.
    assert torch.all(charge[0, 8, [0, 4, 5, 6, 7]] == 1)


def test_asr_row_text_asks_speech_answers():
    aligned, is_speech = _row([8, 9, 10], [2, 3, 4, 5])  # speech first, transcript after it
    charge, queries = diagonal_penalty(aligned, is_speech, sigma=0.2)
    assert queries[0].nonzero().flatten().tolist() == [8, 9, 10]
    assert charge[0, 8, 2] == 0 and charge[0, 10, 5] == 0 and charge[0, 8, 5] > 0.99
    assert torch.all(charge[0, 9, [0, 1, 6, 7, 8]] == 1)


def test_row_without_both_spans_has_no_queries():
    aligned, is_speech = _row([1, 2, 3], [])
    assert not diagonal_penalty(aligned, is_speech, 0.2)[1].any()


def _attention(targets: torch.Tensor, size: int, heads: int = 4) -> torch.Tensor:
    """[1,H,S,S] one-hot attention from each query to ``targets[q]``."""
    attn = torch.zeros(1, heads, size, size)
    attn[0, :, torch.arange(size), targets] = 1.0
    return attn


def test_loss_is_low_on_the_diagonal_and_high_elsewhere():
    aligned, is_speech = _row([1, 2, 3], [6, 7, 8, 9, 10])
    diagonal = torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 2, 3, 3, 3])  # speech 6..10 -> chars 1, 1, 2, 3, 3
    reversed_ = diagonal.clone()
    reversed_[6:11] = torch.tensor([3, 3, 2, 1, 1])
    to_speech = torch.arange(12)  # each query attends to itself
    cfg = GuidedAttentionConfig(weight=1.0, layers=(0,), heads=2)
    on, off, self_ = (
        guided_attention_loss([_attention(t, 12)], aligned, is_speech, cfg) for t in (diagonal, reversed_, to_speech)
    )
    assert 0 <= on < 0.25 < 0.6 < off <= 1  # 5 steps on 3 characters cannot be exactly diagonal
    assert self_ == 1  # attending to anything but the sentence costs everything


def test_only_the_listed_heads_are_charged():
    aligned, is_speech = _row([1, 2, 3], [6, 7, 8, 9, 10])
    attn = _attention(torch.arange(12), 12)  # everything off the sentence...
    attn[0, :2] = _attention(torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 2, 3, 3, 3]), 12)[0, :2]  # ...but heads 0-1
    cfg = GuidedAttentionConfig(weight=1.0, layers=(0,), heads=2)
    assert guided_attention_loss([attn], aligned, is_speech, cfg) < 0.25
    assert guided_attention_loss([attn], aligned, is_speech, dataclasses.replace(cfg, heads=4)) > 0.5


def _guided_batch():
    batch = make_batch()
    aligned = torch.zeros_like(batch.is_speech)
    aligned[:, 1:4] = True  # inside the text prefix of both rows (speech starts at 6 and 4)
    return dataclasses.replace(batch, aligned_text=aligned)


def test_slm_adds_the_guided_loss_and_reports_the_lm_loss_apart():
    batch = _guided_batch()
    plain = make_model(backbone=EAGER)
    guided = make_model(backbone=EAGER, guided=ON)
    out, ref = guided(batch), plain(batch)
    assert "guided" not in ref.losses and torch.allclose(ref.loss, ref.losses["lm"])
    assert torch.allclose(out.losses["lm"], ref.losses["lm"])  # same weights (same seed): same study objective
    assert 0 < float(out.losses["guided"].detach()) <= 1
    assert torch.allclose(out.loss, out.losses["lm"] + out.losses["guided"])
    out.loss.backward()
    layer = guided.backbone.lm.get_decoder().layers[1].self_attn
    assert layer.q_proj.weight.grad is not None and layer.q_proj.weight.grad.abs().sum() > 0


def test_guided_loss_goes_down_when_trained_alone():
    batch = _guided_batch()
    model = make_model(backbone=EAGER, guided=ON).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        value = model(batch).losses["guided"]
        first = float(value.detach()) if first is None else first
        opt.zero_grad()
        value.backward()
        opt.step()
    assert float(value.detach()) < 0.7 * first


def test_bad_guided_settings_are_clear_errors():
    with pytest.raises(ValueError, match="attn_implementation: eager"):
        SLMConfig(guided=ON)
    with pytest.raises(ValueError, match="layer the 2-layer backbone lacks"):
        SLMConfig(backbone=EAGER, guided=dataclasses.replace(ON, layers=(2,)))
    with pytest.raises(ValueError, match="num_heads"):
        SLMConfig(backbone=EAGER, guided=dataclasses.replace(ON, heads=5))
    for bad in ({"weight": -1.0}, {"heads": 0}, {"sigma": 0.0}, {"layers": ()}, {"layers": (1, 1)}):
        with pytest.raises(ValueError, match="guided"):
            GuidedAttentionConfig(**{**dataclasses.asdict(ON), **bad})
    with pytest.raises(ValueError, match="eager"):
        make_model().backbone(torch.zeros(1, 3, 32), output_attentions=True)
