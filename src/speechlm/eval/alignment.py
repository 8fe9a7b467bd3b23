"""Cross-modal alignment of an SLM's hidden states (study §4.6, Table 4; Appendix F.1, Figure 5).

Everything here is a function of hidden-state tensors, so it works for any backbone: collect the
states of text and speech positions per layer (:func:`collect_states`), then compute

- **TTSim / SSSim / STSim**: the mean cosine similarity over all pairs of distinct text states,
  of distinct speech states, and of (text, speech) states;
- **TTDist / SSDist / STDist**: the mean Euclidean distance over the same pairs, measured between
  L2-normalised states. Table 4 only gives the names; unit-normalising reproduces its figures'
  relation Dist ~ sqrt(2 - 2 Sim) (e.g. NTP: STSim 0.480 -> sqrt(1.04) = 1.02 vs. STDist 1.014),
  which raw hidden states (norms in the tens to hundreds) could not;
- the **Riemannian distance** of §4.6 (Bonnabel & Sepulchre, 2009) between the speech and text
  state clouds: ``sqrt(sum_i log^2 lambda_i + ||mu_S - mu_T||^2)``, lambda_i the eigenvalues of
  ``K_S^{-1} K_T``, K the covariance of the centred states (§4.6: ``K = V Sigma^2 V^T / (n-1)``,
  which is exactly ``Hc^T Hc / (n-1)``);
- **UMAP** projections of both modalities per layer (Figure 5), saved as one PNG.

Covariance regularisation: with fewer states than dimensions (n <= d) a sample covariance is
singular, and then ``K_S^{-1}`` does not exist. We shrink each covariance towards a scaled identity,
``K' = (1 - a) K + (a + eps) * (tr K / d) * I`` (a = ``shrinkage``, default 0.1; eps = 1e-6),
which keeps K' positive definite and — because the target is scaled by K's own mean eigenvalue —
keeps the distance invariant to a common rescaling: ``K_T = c K_S`` still gives ``lambda_i = c``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

DEFAULT_SHRINKAGE = 0.1
DEFAULT_EPS = 1e-6


@dataclass(frozen=True)
class ModalityStates:
    """Hidden states of one layer split by modality."""

    text: torch.Tensor  # [Nt, D] states at text positions
    speech: torch.Tensor  # [Ns, D] states at speech positions

    def __post_init__(self) -> None:
        if self.text.ndim != 2 or self.speech.ndim != 2 or self.text.shape[1] != self.speech.shape[1]:
            raise ValueError(
                f"text/speech states must be [N, D] with one D, got {tuple(self.text.shape)} and {tuple(self.speech.shape)}"
            )

    def cat(self, other: ModalityStates) -> ModalityStates:
        return ModalityStates(torch.cat([self.text, other.text]), torch.cat([self.speech, other.speech]))


@dataclass(frozen=True)
class AlignmentMetrics:
    """Table 4's columns for one layer (cosines and distances as defined in the module doc)."""

    tt_sim: float
    ss_sim: float
    st_sim: float
    tt_dist: float
    ss_dist: float
    st_dist: float
    riemannian: float
    n_text: int
    n_speech: int

    def to_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def default_layers(num_layers: int) -> tuple[int, int, int]:
    """Figure 5's layers: the word embeddings (0), the middle layer and the last layer."""
    if num_layers < 1:
        raise ValueError(f"a backbone has at least one layer, got {num_layers}")
    return (0, num_layers // 2, num_layers)


def collect_states(
    hidden_states: Sequence[torch.Tensor],
    is_speech: torch.Tensor,
    attention_mask: torch.Tensor,
    layers: Sequence[int],
) -> dict[int, ModalityStates]:
    """Split ``hidden_states`` (HF ``output_hidden_states``: L+1 tensors [B,S,D], index 0 = the
    input embeddings) into text and speech states for each requested layer.

    ``is_speech [B,S]`` marks speech positions and ``attention_mask [B,S]`` real ones; padded
    positions are dropped. States are returned as float32 on the CPU.
    """
    if is_speech.shape != attention_mask.shape or is_speech.ndim != 2:
        raise ValueError(f"is_speech {tuple(is_speech.shape)} and attention_mask {tuple(attention_mask.shape)} must be one [B,S] shape")
    real = attention_mask.bool()
    speech_pos, text_pos = real & is_speech.bool(), real & ~is_speech.bool()
    out = {}
    for layer in layers:
        if not -len(hidden_states) <= layer < len(hidden_states):
            raise ValueError(f"layer {layer} does not exist; there are {len(hidden_states)} hidden-state tensors")
        h = hidden_states[layer]
        if h.shape[:2] != is_speech.shape:
            raise ValueError(f"hidden states {tuple(h.shape)} do not match the [B,S] mask {tuple(is_speech.shape)}")
        h = h.detach().float().cpu()
        out[layer] = ModalityStates(text=h[text_pos.cpu()], speech=h[speech_pos.cpu()])
    return out


def subsample(x: torch.Tensor, max_points: int, seed: int = 0) -> torch.Tensor:
    """At most ``max_points`` rows of ``x [N, D]``, drawn without replacement (seeded)."""
    if x.shape[0] <= max_points:
        return x
    gen = torch.Generator().manual_seed(seed)
    return x[torch.randperm(x.shape[0], generator=gen)[:max_points]]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.double(), dim=-1)


def mean_cosine(a: torch.Tensor, b: torch.Tensor | None = None) -> float:
    """Mean cosine over all (a_i, b_j) pairs; with ``b`` omitted, over distinct pairs within ``a``.

    Uses ``mean_ij <u_i, v_j> = <mean u, mean v>``, so it costs O(N D), not O(N^2 D).
    """
    ua = _unit(a)
    if b is not None:
        return float(ua.mean(0) @ _unit(b).mean(0))
    n = ua.shape[0]
    if n < 2:
        raise ValueError(f"intra-modal similarity needs at least 2 states, got {n}")
    total = ua.sum(0)
    return float((total @ total - n) / (n * (n - 1)))  # drop the n self-pairs (cos = 1)


def mean_distance(a: torch.Tensor, b: torch.Tensor | None = None, chunk: int = 1024) -> float:
    """Mean Euclidean distance between L2-normalised states (all pairs, or distinct pairs in ``a``)."""
    ua = _unit(a)
    ub = ua if b is None else _unit(b)
    total = 0.0
    for start in range(0, ua.shape[0], chunk):
        total += float(torch.cdist(ua[start : start + chunk], ub).sum())
    pairs = ua.shape[0] * ub.shape[0]
    if b is None:
        pairs -= ua.shape[0]  # the diagonal contributes 0 to the sum
        if pairs <= 0:
            raise ValueError(f"intra-modal distance needs at least 2 states, got {ua.shape[0]}")
    return total / pairs


def covariance(h: torch.Tensor, shrinkage: float = DEFAULT_SHRINKAGE, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Regularised covariance ``[D, D]`` of ``h [N, D]`` (centred; shrinkage as in the module doc)."""
    if not 0.0 <= shrinkage < 1.0 or eps < 0:
        raise ValueError(f"need 0 <= shrinkage < 1 and eps >= 0, got shrinkage={shrinkage}, eps={eps}")
    n, d = h.shape
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 states, got {n}")
    hc = h.double() - h.double().mean(0)
    k = hc.T @ hc / (n - 1)
    scale = torch.trace(k) / d
    if scale <= 0:
        raise ValueError("all states are identical: the covariance is zero and the distance is undefined")
    return (1.0 - shrinkage) * k + (shrinkage + eps) * scale * torch.eye(d, dtype=k.dtype)


def riemannian_distance(
    speech: torch.Tensor, text: torch.Tensor, shrinkage: float = DEFAULT_SHRINKAGE, eps: float = DEFAULT_EPS
) -> float:
    """§4.6: ``sqrt(sum_i log^2 lambda_i(K_S^{-1} K_T) + ||mu_S - mu_T||^2)`` for ``[N, D]`` clouds.

    The generalised eigenvalues are computed stably as those of ``L^{-1} K_T L^{-T}`` with
    ``K_S = L L^T`` (Cholesky), a symmetric matrix similar to ``K_S^{-1} K_T``.
    """
    if speech.ndim != 2 or text.ndim != 2 or speech.shape[1] != text.shape[1]:
        raise ValueError(f"need [N, D] speech and text states with one D, got {tuple(speech.shape)} and {tuple(text.shape)}")
    k_s, k_t = covariance(speech, shrinkage, eps), covariance(text, shrinkage, eps)
    chol = torch.linalg.cholesky(k_s)
    inv_l = torch.linalg.solve_triangular(chol, torch.eye(chol.shape[0], dtype=chol.dtype), upper=False)
    lam = torch.linalg.eigvalsh(inv_l @ k_t @ inv_l.T)
    mean_gap = speech.double().mean(0) - text.double().mean(0)
    return math.sqrt(float(torch.log(lam).square().sum() + mean_gap.square().sum()))


def alignment_metrics(
    states: ModalityStates, max_points: int = 4096, seed: int = 0, shrinkage: float = DEFAULT_SHRINKAGE
) -> AlignmentMetrics:
    """Table 4's metrics for one layer (at most ``max_points`` states per modality, subsampled)."""
    text, speech = subsample(states.text, max_points, seed), subsample(states.speech, max_points, seed + 1)
    return AlignmentMetrics(
        tt_sim=mean_cosine(text),
        ss_sim=mean_cosine(speech),
        st_sim=mean_cosine(speech, text),
        tt_dist=mean_distance(text),
        ss_dist=mean_distance(speech),
        st_dist=mean_distance(speech, text),
        riemannian=riemannian_distance(speech, text, shrinkage=shrinkage),
        n_text=int(states.text.shape[0]),
        n_speech=int(states.speech.shape[0]),
    )


@dataclass(frozen=True)
class Projection:
    """A 2-D UMAP embedding of one layer's states (Figure 5)."""

    layer: int
    text: np.ndarray  # [Nt, 2]
    speech: np.ndarray  # [Ns, 2]

    @property
    def centroid_distance(self) -> float:
        """Distance between the modality centroids in the projection (the gap Appendix F.1 quotes)."""
        return float(np.linalg.norm(self.text.mean(0) - self.speech.mean(0)))


def umap_projection(
    states: ModalityStates, layer: int, max_points: int = 2000, n_neighbors: int = 15, seed: int = 0
) -> Projection:
    """Fit UMAP on both modalities together (so distances between them are meaningful).

    The first fit in a process spends ~30 s compiling umap-learn's numba kernels.
    """
    import umap

    text, speech = subsample(states.text, max_points, seed), subsample(states.speech, max_points, seed + 1)
    x = torch.cat([text, speech]).numpy()
    if x.shape[0] <= n_neighbors:
        raise ValueError(f"UMAP needs more than n_neighbors={n_neighbors} states, got {x.shape[0]}")
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed, n_jobs=1)
    xy = reducer.fit_transform(x)
    return Projection(layer=layer, text=xy[: len(text)], speech=xy[len(text) :])


def plot_projections(projections: Sequence[Projection], path: str | Path, title: str = "") -> Path:
    """One panel per layer, text and speech states coloured by modality; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not projections:
        raise ValueError("plot_projections needs at least one projection")
    fig, axes = plt.subplots(1, len(projections), figsize=(4 * len(projections), 4), squeeze=False)
    for ax, proj in zip(axes[0], projections):
        ax.scatter(proj.text[:, 0], proj.text[:, 1], s=4, alpha=0.6, label="text", c="tab:blue")
        ax.scatter(proj.speech[:, 0], proj.speech[:, 1], s=4, alpha=0.6, label="speech", c="tab:orange")
        ax.set_title(f"layer {proj.layer}  (centroid gap {proj.centroid_distance:.2f})")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(loc="best", markerscale=3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
