"""Quantizer round trips: the code path (decode) and the quantise path agree, and re-quantising
decoded latents gives back the same codes."""

from __future__ import annotations

import math

import pytest
import torch

from speechlm.tokenizers.quantizers import Quantizer, QuantizerConfig

DIM, B, T = 16, 3, 20


def _quantizer(kind: str, dim: int = DIM) -> Quantizer:
    torch.manual_seed(0)
    cfg = QuantizerConfig(codebook_size=64, num_quantizers=4, levels=(5, 5, 3))
    return Quantizer(kind, cfg, dim).eval()


def _well_separated_rvq(q: Quantizer) -> Quantizer:
    """Shrink level k's codebook by 10**k: each residual then stays inside the Voronoi cell of the
    code chosen above it — the coarse-to-fine regime training drives RVQ towards — so greedy
    re-quantisation of a decoded latent must reproduce every level's code. (Much smaller factors
    drown the last levels in the float32 round-off of the library's squared-distance search.)"""
    with torch.no_grad():
        for k, layer in enumerate(q.vq.layers):
            layer._codebook.embed.mul_(10.0**-k)
    return q


@pytest.mark.parametrize("kind", ["rvq", "vq", "fsq"])
def test_decoding_codes_reproduces_the_quantised_latents(kind: str) -> None:
    q = _quantizer(kind)
    z = torch.randn(B, DIM, T)
    out = q(z)
    assert out.codes.shape == (B, q.num_codebooks, T)
    torch.testing.assert_close(q.decode(out.codes), out.z, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["rvq", "vq", "fsq"])
def test_requantising_decoded_latents_gives_the_same_codes(kind: str) -> None:
    # FSQ with dim == len(levels) has no learned in/out projection, so its latents are the codes.
    dim = 3 if kind == "fsq" else DIM
    q = _quantizer(kind, dim)
    if kind == "rvq":
        q = _well_separated_rvq(q)
    codes = q(torch.randn(B, dim, T)).codes
    assert torch.equal(q(q.decode(codes)).codes, codes)


def test_codebook_sizes_follow_the_config() -> None:
    assert _quantizer("rvq").codebook_sizes == (64,) * 4
    assert _quantizer("vq").codebook_sizes == (64,)
    assert _quantizer("fsq").codebook_sizes == (math.prod((5, 5, 3)),)


def test_padding_frames_get_code_zero() -> None:
    q = _quantizer("rvq")
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 12:] = False
    codes = q(torch.randn(B, DIM, T), mask).codes
    assert (codes[0, :, 12:] == 0).all()


def test_rvq_quantizer_dropout_trains_on_fewer_levels() -> None:
    q = _quantizer("rvq").train()
    z = torch.randn(B, DIM, T)
    errors = {torch.dist(q(z).z, z).item() for _ in range(12)}
    assert len(errors) > 1, "quantizer dropout should vary the number of levels between training steps"


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="levels"):
        QuantizerConfig(levels=(2, 5))
    with pytest.raises(ValueError, match="codebook_size"):
        QuantizerConfig(codebook_size=1)
    with pytest.raises(ValueError, match="unknown quantizer kind"):
        Quantizer("pq", QuantizerConfig(), DIM)  # type: ignore[arg-type]
