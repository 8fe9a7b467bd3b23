import pytest
import torch

from speechlm.inference import sampling as S


def test_penalty_lowers_seen_tokens_whatever_their_sign():
    logits = torch.tensor([[[2.0, -2.0, 1.0, 0.5]]])  # [B=1,G=1,V=4]
    out = S.RepetitionPenalty(2.0)(logits, torch.tensor([[0, 1]]))
    assert out.tolist() == [[[1.0, -4.0, 1.0, 0.5]]]
    assert (out <= logits).all()


def test_penalty_window_only_looks_back_that_far():
    logits = torch.ones(1, 1, 5)
    hist = torch.tensor([[0, 1, 2, 3]])
    out = S.RepetitionPenalty(2.0, window=2)(logits, hist)
    assert out[0, 0].tolist() == [1.0, 1.0, 0.5, 0.5, 1.0]


def test_penalty_ignores_unemitted_entries_and_exempt_ids():
    logits = torch.ones(2, 1, 4)
    hist = torch.tensor([[-1, -1], [3, 0]])
    out = S.RepetitionPenalty(2.0, exempt=(3,))(logits, hist)
    assert out[0, 0].tolist() == [1, 1, 1, 1]
    assert out[1, 0].tolist() == [0.5, 1, 1, 1]


def test_compact_penalty_equals_the_full_vocabulary_penalty_read_at_the_columns():
    # streams {0,1,2} | {3,4,5}, END=6, PAD=7; slot 0 -> stream 0, slot 1 -> stream 1; slot 1 has an unused column (8)
    V = 8
    columns = torch.tensor([[0, 1, 2, 6, 7], [3, 4, 6, 7, 8]])
    full = torch.randn(2, 2, V)
    hist = torch.tensor([[0, 4, 6, -1], [2, 2, 3, 5]])
    want = S.RepetitionPenalty(1.5, exempt=(6, 7))(full, hist)
    padded = torch.cat([full, torch.zeros(2, 2, 1)], -1)
    compact = padded.gather(-1, columns.expand(2, -1, -1))
    got = S.RepetitionPenalty(1.5, exempt=(6, 7), columns=columns, vocab_size=V)(compact, hist)
    torch.testing.assert_close(got[:, 0], want[:, 0, columns[0]])
    torch.testing.assert_close(got[:, 1, :4], want[:, 1, columns[1, :4]])
    with pytest.raises(ValueError, match="go together"):
        S.RepetitionPenalty(1.5, columns=columns)
    with pytest.raises(ValueError, match="do not match"):
        S.RepetitionPenalty(1.5, columns=columns, vocab_size=V)(torch.zeros(2, 2, 3), hist)


def test_penalty_applies_to_every_slot_and_masks_keep_streams_apart():
    # two streams of size 2 -> ids {0,1} | {2,3}, END=4, PAD=5; G=2 slots with fixed streams
    allowed = torch.zeros(2, 6, dtype=torch.bool)
    allowed[0, [0, 1, 4, 5]] = True
    allowed[1, [2, 3, 4, 5]] = True
    logits = torch.tensor([[[0.0, 1.0, 3.0, 0.0, -1.0, -9.0], [5.0, 0.0, 0.0, 1.0, -1.0, -9.0]]])
    procs = S.build_processors(S.SamplingConfig(repetition_penalty=1.0), allowed=allowed)
    ids = S.choose(logits, torch.zeros(1, 0, dtype=torch.long), procs)
    assert ids.tolist() == [[1, 3]]  # slot 0 cannot take id 2, slot 1 cannot take id 0


def test_top_p_keeps_the_nucleus_and_never_nothing():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    out = S.TopP(0.7)(logits, torch.empty(1, 0, dtype=torch.long))
    assert torch.isfinite(out[0, 0]).tolist() == [True, True, False, False]
    out = S.TopP(1e-6)(logits, torch.empty(1, 0, dtype=torch.long))
    assert torch.isfinite(out[0, 0]).tolist() == [True, False, False, False]
    out = S.TopP(0.5)(logits, torch.empty(1, 0, dtype=torch.long))  # exactly reaches p with the first id
    assert torch.isfinite(out[0, 0]).tolist() == [True, False, False, False]


def test_top_k_and_temperature():
    logits = torch.tensor([[[1.0, 3.0, 2.0, 0.0]]])
    out = S.TopK(2)(logits, None)
    assert torch.isfinite(out[0, 0]).tolist() == [False, True, True, False]
    assert torch.allclose(S.Temperature(2.0)(logits, None), logits / 2)


def test_sampling_respects_filters_and_seed():
    logits = torch.randn(3, 2, 50)
    cfg = S.SamplingConfig(do_sample=True, top_k=3, repetition_penalty=1.0)
    procs = S.build_processors(cfg)
    hist = torch.empty(3, 0, dtype=torch.long)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = S.choose(logits, hist, procs, do_sample=True, generator=g1)
    b = S.choose(logits, hist, procs, do_sample=True, generator=g2)
    assert torch.equal(a, b)
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == a[..., None]).any(-1).all()


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(repetition_penalty=0.9), "repetition_penalty"),
        (dict(penalty_window=-2), "penalty_window"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        S.SamplingConfig(**kwargs)


def test_bad_processor_arguments():
    with pytest.raises(ValueError):
        S.RepetitionPenalty(0.5)
    with pytest.raises(ValueError):
        S.TopK(0)
    with pytest.raises(ValueError, match="no permitted id"):
        S.AllowedMask(torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected logits"):
        S.choose(torch.zeros(2, 4), torch.zeros(2, 0, dtype=torch.long), [])
