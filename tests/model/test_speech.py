import pytest
import torch

from speechlm.model.speech import SpeechEmbedding


@pytest.mark.parametrize("fusion", ["linear", "mlp", "mean"])
@pytest.mark.parametrize("group_size", [1, 3, 6])
def test_fusion_shapes(fusion, group_size):
    emb = SpeechEmbedding(vocab_size=26, dim=16, group_size=group_size, fusion=fusion)
    ids = torch.randint(0, 26, (2, 5, group_size))
    assert emb(ids).shape == (2, 5, 16)
    assert emb(ids[0, 0]).shape == (16,)  # any leading shape, e.g. one group at generation time


def test_mean_fusion_is_the_arithmetic_mean():
    emb = SpeechEmbedding(26, 8, 3, "mean")
    ids = torch.tensor([[4, 11, 25]])
    table = emb.table.weight
    expected = (table[4] + table[11] + table[25]) / 3
    torch.testing.assert_close(emb(ids)[0], expected)


@pytest.mark.parametrize("fusion", ["linear", "mlp"])
def test_learned_fusions_start_at_the_mean_then_depart(fusion):
    torch.manual_seed(0)
    emb = SpeechEmbedding(26, 8, 3, fusion)
    ids = torch.randint(0, 26, (4, 3))
    torch.testing.assert_close(emb(ids), emb.embed(ids).mean(-2))
    target = torch.randn(4, 8)  # not reachable by the mean: only the fusion's own weights train
    fusion_params = [p for name, p in emb.named_parameters() if not name.startswith("table")]
    opt = torch.optim.SGD(fusion_params, lr=0.1)
    for _ in range(5):
        loss = (emb(ids) - target).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.allclose(emb(ids), emb.embed(ids).mean(-2), atol=1e-4)


def test_fusion_depends_on_slot_order_except_mean():
    torch.manual_seed(0)
    linear = SpeechEmbedding(26, 8, 2, "linear")
    with torch.no_grad():
        linear.linear.weight.add_(torch.randn_like(linear.linear.weight))
    ids = torch.tensor([[1, 9]])
    assert not torch.allclose(linear(ids), linear(ids.flip(-1)))
    mean = SpeechEmbedding(26, 8, 2, "mean")
    torch.testing.assert_close(mean(ids), mean(ids.flip(-1)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown fusion 'sum'"):
        SpeechEmbedding(26, 8, 3, "sum")
    emb = SpeechEmbedding(26, 8, 3, "mean")
    with pytest.raises(ValueError, match="groups of 3"):
        emb(torch.zeros(2, 4, dtype=torch.long))
