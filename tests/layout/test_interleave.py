import pytest
import torch

from speechlm.layout.interleave import deinterleave, interleave

FILL = -7


def random_codes(B: int, K: int, T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1000, (B, K, T), generator=g)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0] = T  # at least one full-length item
    if B > 2:
        lengths[1], lengths[2] = 0, min(1, T)
    return codes, lengths


def test_fwi_is_frame_major():
    # study Appendix E.3: [p_i, c_i1, c_i2] per frame
    codes = torch.tensor([[[1, 2, 3], [11, 12, 13], [21, 22, 23]]])
    flat = interleave(codes, torch.tensor([3]), "fwi", chunk=80, fill=FILL)
    assert flat.tokens.tolist() == [[1, 11, 21, 2, 12, 22, 3, 13, 23]]
    assert flat.lengths.tolist() == [9]


def test_cwi_keeps_streams_contiguous_within_chunks_and_shortens_the_last():
    # study Appendix E.3: [p_{i:i+l}, c_{i:i+l,1}, c_{i:i+l,2}], final chunk <= l frames
    codes = torch.tensor([[[1, 2, 3, 4, 5], [11, 12, 13, 14, 15]]])
    flat = interleave(codes, torch.tensor([5]), "cwi", chunk=2, fill=FILL)
    assert flat.tokens.tolist() == [[1, 2, 11, 12, 3, 4, 13, 14, 5, 15]]


def test_cwi_with_one_chunk_is_type_wise_contiguous():
    codes, _ = random_codes(1, 3, 10, seed=0)
    flat = interleave(codes, torch.tensor([10]), "cwi", chunk=80, fill=FILL)
    assert torch.equal(flat.tokens, codes.reshape(1, 30))


def test_positions_past_the_length_are_filled():
    codes = torch.arange(12).reshape(1, 3, 4)
    flat = interleave(codes, torch.tensor([2]), "fwi", chunk=80, fill=FILL)
    assert flat.tokens.tolist() == [[0, 4, 8, 1, 5, 9] + [FILL] * 6]


@pytest.mark.parametrize("order", ["fwi", "cwi"])
@pytest.mark.parametrize(("K", "T", "chunk"), [(3, 17, 5), (1, 9, 4), (6, 8, 80), (2, 12, 3), (3, 0, 2), (3, 1, 1)])
def test_interleave_round_trips_on_padded_batches(order, K, T, chunk):
    codes, lengths = random_codes(5, K, T, seed=K * 100 + T)
    flat = interleave(codes, lengths, order, chunk, fill=FILL)
    back = deinterleave(flat.tokens, flat.lengths, K, order, chunk, fill=FILL)
    assert torch.equal(back.lengths, lengths)
    T_out = int(lengths.max())
    valid = torch.arange(T_out)[None, None, :] < lengths[:, None, None]
    assert torch.equal(back.codes[valid.expand_as(back.codes)], codes[:, :, :T_out][valid.expand(5, K, T_out)])
    assert (back.codes[~valid.expand_as(back.codes)] == FILL).all()


def test_tokens_are_a_permutation_of_the_valid_codes():
    codes, lengths = random_codes(4, 3, 11, seed=3)
    flat = interleave(codes, lengths, "cwi", chunk=4, fill=FILL)
    for b in range(4):
        n = int(flat.lengths[b])
        expect = codes[b, :, : int(lengths[b])].flatten().sort().values
        assert torch.equal(flat.tokens[b, :n].sort().values, expect)


def test_bad_arguments_are_rejected():
    codes = torch.zeros(1, 3, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="order must be one of"):
        interleave(codes, torch.tensor([4]), "zigzag", chunk=80, fill=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk must be a positive"):
        interleave(codes, torch.tensor([4]), "cwi", chunk=0, fill=0)
    with pytest.raises(ValueError, match="multiples of 3 streams"):
        deinterleave(torch.zeros(1, 12, dtype=torch.long), torch.tensor([7]), 3, "fwi", 80, fill=0)
