"""Semantic teacher: MFCC maths, k-means, masked prediction, targets on a codec grid, save/load, recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speechlm import config
from speechlm.tokenizers.base import pad_batch
from speechlm.tokenizers.teacher import (
    KMeansCodebook,
    SemanticTeacher,
    TeacherConfig,
    load_teacher,
    mfcc_from_logmel,
    save_teacher,
    span_mask,
    teacher_targets,
)

@pytest.fixture(autouse=True)
def one_thread():
    """On a shared 2-core machine one intra-op thread is several times faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "codec"
TINY = TeacherConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, feature_layer=1, n_clusters=8)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return pad_batch([0.1 * torch.randn(n, generator=g) for n in (8000, 5000, 1234)])


def test_deltas_of_a_linear_ramp_are_its_slope() -> None:
    # c0 of an orthonormal DCT-II is sqrt(M) * mean(logmel): a ramp of slope 1 in every bin gives Δc0 = sqrt(M).
    m, t = 20, 30
    logmel = torch.arange(t, dtype=torch.float32).expand(1, m, t).clone()
    feats = mfcc_from_logmel(logmel, n_mfcc=5)
    assert feats.shape == (1, t, 15)
    interior = slice(4, t - 4)  # edges are replicated, so only interior frames see the full window
    torch.testing.assert_close(feats[0, interior, 5], torch.full((t - 8,), m**0.5), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats[0, interior, 10], torch.zeros(t - 8), rtol=0, atol=1e-4)  # ΔΔ of a line


def test_kmeans_is_deterministic_and_recovers_separated_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.randint(3, (600,), generator=g)
    x = centres[labels] + 0.3 * torch.randn(600, 2, generator=g)
    a = KMeansCodebook(3, 2).fit(x, seed=1)
    b = KMeansCodebook(3, 2).fit(x, seed=1)
    torch.testing.assert_close(a.centroids, b.centroids)
    assign = a(x)
    assert assign.shape == (600,)
    # A perfect partition: every true cluster maps to exactly one k-means cluster.
    assert all(len(set(assign[labels == c].tolist())) == 1 for c in range(3))
    assert len(set(assign.tolist())) == 3


def test_kmeans_refuses_too_few_frames() -> None:
    with pytest.raises(ValueError, match="at least n_clusters"):
        KMeansCodebook(10, 2).fit(torch.randn(5, 2))


def test_span_mask_covers_only_valid_frames() -> None:
    g = torch.Generator().manual_seed(0)
    mask = span_mask(torch.tensor([50, 12]), 50, 0.1, 5, g)
    assert mask.shape == (2, 50) and mask[0].any() and mask[1].any()
    assert not mask[1, 12:].any()


def test_features_and_units_shapes_and_batch_independence() -> None:
    torch.manual_seed(0)
    teacher = SemanticTeacher(TINY).eval()
    wav, lengths = _batch()
    feats = teacher.features(wav, lengths)
    frames = teacher.frame_lengths(lengths)
    assert frames.tolist() == [25, 16, 4] and feats.shape == (3, 25, 32)
    units = teacher.units(wav, lengths)
    assert units.shape == (3, 25) and units.dtype == torch.int64 and int(units.max()) < TINY.n_clusters
    alone = teacher.features(wav[2:, :1234], lengths[2:])
    torch.testing.assert_close(feats[2, :4], alone[0], rtol=1e-4, atol=1e-4)  # padding does not leak


def test_masked_prediction_loss_goes_down() -> None:
    torch.manual_seed(0)
    teacher = SemanticTeacher(TINY).train()
    wav, lengths = pad_batch([0.1 * torch.randn(4000), 0.1 * torch.randn(3000)])
    targets = teacher.mfcc_features(wav, lengths)[..., 0].gt(0).long()  # a learnable frame labelling
    opt = torch.optim.Adam(teacher.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(15):
        loss, _ = teacher.masked_prediction_loss(wav, lengths, targets, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_save_load_round_trip_gives_identical_units(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = SemanticTeacher(TINY).eval()
    wav, lengths = _batch()
    teacher.unit_codebook.fit(teacher.features(wav, lengths)[0].detach(), seed=0)
    loaded = load_teacher(save_teacher(teacher, tmp_path / "t"))
    assert torch.equal(loaded.units(wav, lengths), teacher.units(wav, lengths))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_targets_on_a_coarser_codec_grid() -> None:
    torch.manual_seed(0)
    teacher = SemanticTeacher(TINY).eval()
    wav, lengths = _batch()
    same = teacher_targets(teacher, wav, lengths, 25)
    assert torch.equal(same.units, teacher.units(wav, lengths))  # same grid: identity
    half = teacher_targets(teacher, wav, lengths, 13)  # a 25 Hz codec
    assert half.features.shape == (3, 13, 32) and half.units.shape == (3, 13)
    assert half.mask[2].tolist() == [True, True] + [False] * 11


def test_bad_config_values_are_named() -> None:
    with pytest.raises(ValueError, match="feature_layer=5"):
        TeacherConfig(num_layers=3, feature_layer=5)
    with pytest.raises(ValueError, match="n_mfcc=50"):
        TeacherConfig(n_mfcc=50)


@pytest.mark.slow
def test_recipe_trains_two_iterations_and_saves(tiny_corpus: Path, tmp_path: Path) -> None:
    from speechlm.tokenizers.teacher_train import TeacherTrainConfig, train_teacher

    overrides = [f"data={tiny_corpus}", f"out={tmp_path / 'teacher'}"]
    cfg = config.load(TeacherTrainConfig, CONFIGS / "tiny_teacher.yaml", overrides)
    result = train_teacher(cfg)
    assert {row["iteration"] for row in result.history} == {1, 2}
    loaded = load_teacher(result.out)
    wav, lengths = _batch()
    assert loaded.units(wav, lengths).shape == (3, 25)
