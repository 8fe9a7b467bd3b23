"""Semi-decoupled codec: the distillation loss, where its gradient goes, and that it trains."""

from __future__ import annotations

import math

import pytest
import torch

from speechlm.tokenizers.base import pad_batch
from speechlm.tokenizers.registry import build_tokenizer
from speechlm.tokenizers.semi_decoupled import SemiDecoupledCodec, distillation_loss
from speechlm.tokenizers.teacher import SemanticTeacher, TeacherConfig
from tests.tokenizers.conftest import tiny_tokenizer_config


@pytest.fixture(autouse=True)
def one_thread():
    """On a shared 2-core machine one intra-op thread is several times faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _codec_and_teacher() -> tuple[SemiDecoupledCodec, SemanticTeacher]:
    torch.manual_seed(0)
    codec = build_tokenizer(tiny_tokenizer_config("semi_decoupled"))
    teacher = SemanticTeacher(TeacherConfig(hidden_size=codec.cfg.teacher_dim, num_layers=1, num_heads=2, feature_layer=1))
    codec.attach_teacher(teacher)
    return codec, teacher


@pytest.mark.parametrize("axis", ["t", "d"])
def test_distillation_loss_is_minimal_for_aligned_and_log2_for_orthogonal(axis: str) -> None:
    x = torch.randn(2, 6, 4)
    mask = torch.ones(2, 6, dtype=torch.bool)
    assert distillation_loss(x, 3.0 * x, mask, axis).item() == pytest.approx(-math.log(1 / (1 + math.exp(-1))), abs=1e-5)
    a = torch.zeros(1, 2, 2)
    b = torch.zeros(1, 2, 2)
    a[0, 0, 0] = a[0, 1, 0] = 1.0  # orthogonal along both axes
    b[0, 0, 1] = b[0, 1, 1] = 1.0
    if axis == "t":
        assert distillation_loss(a, b, torch.ones(1, 2, dtype=torch.bool), axis).item() == pytest.approx(math.log(2))


def test_distillation_ignores_padding_frames() -> None:
    x, y = torch.randn(1, 8, 4), torch.randn(1, 8, 4)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    garbage = y.clone()
    garbage[0, 5:] = 100.0
    for axis in ("t", "d"):
        torch.testing.assert_close(distillation_loss(x, y, mask, axis), distillation_loss(x, garbage, mask, axis))


def test_first_stream_is_semantic_and_the_teacher_is_not_saved() -> None:
    codec, _ = _codec_and_teacher()
    assert codec.coupling == "semi_decoupled"
    assert [s.kind for s in codec.streams] == ["semantic"] + ["acoustic"] * (codec.num_streams - 1)
    assert not any("teacher" in k for k in codec.state_dict())


def test_distillation_trains_the_encoder_not_the_teacher_and_goes_down() -> None:
    codec, teacher = _codec_and_teacher()
    codec.train()
    wav, lengths = pad_batch([0.1 * torch.randn(6000), 0.1 * torch.randn(4000)])
    opt = torch.optim.Adam(codec.parameters(), lr=3e-3)
    losses = []
    for step in range(10):
        out = codec(wav, lengths)
        opt.zero_grad()
        out.losses["distill"].backward()
        if step == 0:
            assert codec.encoder.proj.weight.grad is not None and codec.encoder.proj.weight.grad.abs().sum() > 0
            assert all(p.grad is None for p in teacher.parameters())
        opt.step()
        losses.append(out.losses["distill"].item())
    assert losses[-1] < 0.9 * losses[0]


def test_teacher_width_mismatch_is_an_error() -> None:
    codec = build_tokenizer(tiny_tokenizer_config("semi_decoupled"))
    with pytest.raises(ValueError, match="teacher_dim"):
        codec.attach_teacher(SemanticTeacher(TeacherConfig(hidden_size=64, num_heads=2)))
