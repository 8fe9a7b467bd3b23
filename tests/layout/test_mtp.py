import pytest
import torch

from speechlm.layout.mtp import group, num_groups, ungroup

END, PAD = 100, 101


def test_end_follows_the_last_token_and_pad_fills_the_group():
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 0, 0, 0, 0]])
    out = group(tokens, torch.tensor([7, 3]), group_size=3, end=END, pad=PAD)
    assert out.ids.tolist() == [
        [[1, 2, 3], [4, 5, 6], [7, END, PAD]],
        [[1, 2, 3], [END, PAD, PAD], [PAD, PAD, PAD]],
    ]
    assert out.lengths.tolist() == [3, 2]  # an exact multiple still needs a group for END


def test_without_end_only_the_last_group_is_padded():
    # the reference JSONL's MTP heads: no END, right padding only
    out = group(torch.arange(7)[None], torch.tensor([7]), group_size=3, end=None, pad=PAD)
    assert out.ids.tolist() == [[[0, 1, 2], [3, 4, 5], [6, PAD, PAD]]]
    exact = group(torch.arange(6)[None], torch.tensor([6]), group_size=3, end=None, pad=PAD)
    assert exact.lengths.tolist() == [2]


def test_empty_items():
    out = group(torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 0]), group_size=4, end=END, pad=PAD)
    assert out.ids.tolist() == [[[END, PAD, PAD, PAD]]] * 2
    none = group(torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 0]), group_size=4, end=None, pad=PAD)
    assert none.ids.shape == (2, 0, 4)
    assert ungroup(none.ids, stop_ids=(PAD,)).lengths.tolist() == [0, 0]


@pytest.mark.parametrize("g", [1, 2, 3, 6, 12])
@pytest.mark.parametrize("with_end", [True, False])
def test_group_round_trips(g, with_end):
    gen = torch.Generator().manual_seed(g)
    tokens = torch.randint(0, END, (6, 25), generator=gen)
    lengths = torch.tensor([25, 0, 1, 12, 13, 24])
    out = group(tokens, lengths, g, end=END if with_end else None, pad=PAD)
    assert torch.equal(out.lengths, num_groups(lengths, g, with_end))
    assert out.ids.shape[1] == int(out.lengths.max())
    back = ungroup(out.ids, stop_ids=(END, PAD))
    assert torch.equal(back.lengths, lengths)
    for b in range(6):
        assert torch.equal(back.tokens[b, : lengths[b]], tokens[b, : lengths[b]])
        if with_end:
            assert int(back.tokens[b, lengths[b]]) == END
        assert (back.tokens[b, lengths[b] + int(with_end) :] == PAD).all()


def test_ungroup_without_a_stop_keeps_everything():
    ids = torch.arange(6).reshape(1, 2, 3)
    back = ungroup(ids, stop_ids=(END, PAD))
    assert back.lengths.tolist() == [6]


def test_bad_group_size_and_lengths():
    with pytest.raises(ValueError, match="group size must be a positive integer"):
        group(torch.zeros(1, 3, dtype=torch.long), torch.tensor([3]), 0, end=END, pad=PAD)
    with pytest.raises(ValueError, match="within 0..3"):
        group(torch.zeros(1, 3, dtype=torch.long), torch.tensor([4]), 3, end=END, pad=PAD)
