"""Alignment metrics (study §4.6) against answers known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from speechlm.eval.alignment import (
    ModalityStates,
    alignment_metrics,
    collect_states,
    covariance,
    default_layers,
    mean_cosine,
    mean_distance,
    riemannian_distance,
)


def _cloud(n: int = 400, d: int = 8, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.randn(d, d, generator=gen, dtype=torch.float64)


def test_identical_clouds_have_zero_distance():
    h = _cloud()
    assert riemannian_distance(h, h.clone()) == pytest.approx(0.0, abs=1e-6)


def test_samples_of_one_gaussian_are_close_and_differ_from_another():
    d = 8
    a, b = torch.randn(20_000, d, dtype=torch.float64), torch.randn(20_000, d, dtype=torch.float64)
    near = riemannian_distance(a, b)
    far = riemannian_distance(a, 3.0 * b)
    assert near < 0.1 and far > 1.0


@pytest.mark.parametrize("c", [0.25, 4.0])
def test_scaled_covariance_gives_sqrt_d_log_c(c: float):
    d = 8
    h = _cloud(d=d)
    h = h - h.mean(0)
    # Scaling the states by sqrt(c) scales the covariance by c: every eigenvalue of K_S^-1 K_T is c.
    dist = riemannian_distance(h, math.sqrt(c) * h)
    assert dist == pytest.approx(math.sqrt(d) * abs(math.log(c)), rel=1e-6)


def test_mean_shift_adds_in_quadrature():
    d, c = 6, 2.0
    h = _cloud(d=d)
    h = h - h.mean(0)
    shift = torch.tensor([3.0, -4.0, 0, 0, 0, 0], dtype=torch.float64)  # ||shift|| = 5
    assert riemannian_distance(h, h + shift) == pytest.approx(5.0, rel=1e-6)
    expected = math.sqrt(d * math.log(c) ** 2 + 25.0)
    assert riemannian_distance(h, math.sqrt(c) * h + shift) == pytest.approx(expected, rel=1e-6)


def test_covariance_of_fewer_points_than_dims_is_invertible():
    k = covariance(torch.randn(5, 32))
    assert torch.linalg.eigvalsh(k).min() > 0


def test_degenerate_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="at least 2"):
        covariance(torch.randn(1, 4))
    with pytest.raises(ValueError, match="identical"):
        covariance(torch.ones(10, 4))
    with pytest.raises(ValueError, match="one D"):
        riemannian_distance(torch.randn(10, 4), torch.randn(10, 5))


def test_cosine_and_distance_known_values():
    e = torch.eye(3, dtype=torch.float64)
    # Orthonormal states: every distinct pair has cosine 0 and distance sqrt(2).
    assert mean_cosine(e) == pytest.approx(0.0, abs=1e-12)
    assert mean_distance(e) == pytest.approx(math.sqrt(2))
    # Parallel states of different norms: cosine 1, distance 0 after normalisation.
    a = torch.tensor([[1.0, 0.0], [5.0, 0.0]])
    assert mean_cosine(a) == pytest.approx(1.0) and mean_distance(a) == pytest.approx(0.0, abs=1e-7)
    assert mean_cosine(a, -a) == pytest.approx(-1.0) and mean_distance(a, -a) == pytest.approx(2.0)


def test_mean_cosine_matches_brute_force():
    x = torch.randn(50, 7, dtype=torch.float64)
    u = torch.nn.functional.normalize(x, dim=-1)
    sims = u @ u.T
    brute = (sims.sum() - sims.diagonal().sum()) / (50 * 49)
    assert mean_cosine(x) == pytest.approx(float(brute))


def test_collect_states_splits_by_modality_and_drops_padding():
    b, s, d = 2, 5, 4
    hidden = [torch.arange(b * s * d, dtype=torch.float32).reshape(b, s, d) + 1000 * i for i in range(3)]
    is_speech = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.bool)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    states = collect_states(hidden, is_speech, mask, layers=default_layers(2))
    assert sorted(states) == [0, 1, 2]
    assert states[2].text.shape == (3, d) and states[2].speech.shape == (5, d)
    assert torch.equal(states[1].text[2], hidden[1][1, 0])
    with pytest.raises(ValueError, match="layer 7"):
        collect_states(hidden, is_speech, mask, layers=(7,))


def test_alignment_metrics_orders_aligned_above_misaligned():
    text = torch.randn(300, 16) + 4.0
    aligned = alignment_metrics(ModalityStates(text=text, speech=text + 0.1 * torch.randn(300, 16)))
    apart = alignment_metrics(ModalityStates(text=text, speech=-text))
    assert aligned.st_sim > 0.9 > apart.st_sim
    assert aligned.st_dist < apart.st_dist and aligned.riemannian < apart.riemannian
    assert aligned.n_text == 300 and set(aligned.to_dict()) >= {"tt_sim", "riemannian"}


@pytest.mark.slow
def test_umap_plot_is_written(tmp_path):
    from speechlm.eval.alignment import plot_projections, umap_projection

    states = ModalityStates(text=torch.randn(80, 8), speech=torch.randn(80, 8) + 5.0)
    proj = umap_projection(states, layer=3, n_neighbors=10)
    assert proj.text.shape == (80, 2) and proj.centroid_distance > 1.0
    path = plot_projections([proj], tmp_path / "umap.png")
    assert path.stat().st_size > 1000
