import pytest
import torch
from torch import nn

from speechlm.layout.speech import LayoutConfig, SpeechLayout
from speechlm.model.heads import SlotVocab, SpeechHead

SIZES = (8, 8, 5)  # unequal streams: slots are packed to the widest and the gaps must not leak


def slots(group_size=6):
    layout = SpeechLayout(LayoutConfig(streams=(0, 1, 2), order="fwi", group_size=group_size), SIZES, ("p", "c0", "c1"))
    return SlotVocab.from_layout(layout, group_size), layout


def separate_heads(head: SpeechHead, sv: SlotVocab, hidden: torch.Tensor) -> torch.Tensor:
    """Reference: G independent per-slot heads, each over its own ids, scattered into [..., G, Vs]."""
    out = torch.full((*hidden.shape[:-1], sv.group_size, sv.vocab_size), float("-inf"))
    feats = head.slot_features(hidden)
    for g, ids in enumerate(sv.ids):
        lin = nn.Linear(head.weight.shape[-1], len(ids))
        with torch.no_grad():
            lin.weight.copy_(head.weight[g, : len(ids)])
            lin.bias.copy_(head.bias[g, : len(ids)])
        out[..., g, list(ids)] = lin(feats[..., g, :])
    return out


@pytest.mark.parametrize("kind", ["linear", "mlp", "transformer"])
def test_fused_heads_equal_separate_heads(kind):
    torch.manual_seed(0)
    sv, _ = slots()
    head = SpeechHead(16, sv, kind, heads=4).eval()
    with torch.no_grad():
        head.bias.normal_()
        hidden = torch.randn(2, 5, 16)
        torch.testing.assert_close(head(hidden), separate_heads(head, sv, hidden))


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_compact_slot_logits_give_the_same_loss_as_global_logits(kind):
    """The training path scores W = |stream| + 2 columns per slot instead of Vs: same CE."""
    torch.manual_seed(0)
    sv, layout = slots()
    head = SpeechHead(16, sv, kind)
    hidden = torch.randn(5, 16)
    labels = torch.stack([torch.tensor(ids)[torch.randint(len(ids), (5,))] for ids in sv.ids], dim=1)  # [5,G]
    labels[0, 3] = -100
    local = head.to_local(labels)
    assert (local[labels != -100] >= 0).all() and local[0, 3] == -100
    compact = torch.nn.functional.cross_entropy(head.slot_logits(hidden).transpose(1, 2), local)
    full = torch.nn.functional.cross_entropy(head(hidden).transpose(1, 2), labels)
    torch.testing.assert_close(compact, full)


def test_linear_slot_g_is_a_plain_linear_map_of_h():
    torch.manual_seed(0)
    sv, _ = slots()
    head = SpeechHead(16, sv, "linear")
    hidden = torch.randn(3, 16)
    g = 4
    ids = list(sv.ids[g])
    ref = hidden @ head.weight[g, : len(ids)].T + head.bias[g, : len(ids)]
    torch.testing.assert_close(head(hidden)[:, g, ids], ref)


def test_slots_only_emit_their_stream_plus_end_pad():
    sv, layout = slots()
    head = SpeechHead(16, sv, "mlp")
    logits = head(torch.randn(7, 16))
    finite = torch.isfinite(logits)  # [7,G,Vs]
    vocab = layout.vocab
    for g, k in enumerate(layout.slot_streams()):
        expected = torch.zeros(vocab.size, dtype=torch.bool)
        expected[vocab.stream_slice(k)] = True
        expected[[vocab.end_id, vocab.pad_id]] = True
        assert torch.equal(finite[:, g], expected.expand(7, -1)), g
    assert torch.equal(head.allowed, finite[0])


@pytest.mark.parametrize("group_size", [3, 6, 12])
def test_slot_vocab_agrees_with_the_layouts_stream_masks(group_size):
    sv, layout = slots(group_size)
    for step in (0, 1, 7):
        assert torch.equal(sv.allowed(), layout.allowed_mask(step))


def test_ntp_fwi_slots_cycle_with_the_step_like_the_layout():
    """NTP over K=3 streams under FWI: full-vocabulary weights, but the stream the slot carries
    cycles p, c0, c1 with the step; masking by that cycle reproduces the layout's masks exactly."""
    layout = SpeechLayout(LayoutConfig(streams=(0, 1, 2), order="fwi", group_size=1), SIZES, ("p", "c0", "c1"))
    sv = SlotVocab.from_layout(layout, 1)
    assert sv.is_full and len(sv.phases) == 3
    head = SpeechHead(16, sv)
    masked = head.mask_steps(head(torch.randn(7, 16)), torch.arange(7))
    for step in range(7):
        assert torch.equal(torch.isfinite(masked[step]), layout.allowed_mask(step)), step


def test_chunkwise_slots_are_full_and_unmasked():
    layout = SpeechLayout(LayoutConfig(streams=(0, 1, 2), order="cwi", group_size=1), SIZES, ("p", "c0", "c1"))
    sv = SlotVocab.from_layout(layout, 1)
    assert sv.is_full and sv.phases == () and sv.vocab_size == sum(SIZES) + 2
    head = SpeechHead(16, sv)
    assert torch.isfinite(head.mask_steps(head(torch.randn(2, 16)), torch.tensor([0, 1]))).all()


def test_bad_slot_configurations():
    _, layout = slots(6)
    with pytest.raises(ValueError, match="6 slots per group but the model's group_size is 3"):
        SlotVocab.from_layout(layout, 3)
    with pytest.raises(ValueError, match="slot 0's ids"):
        SlotVocab(ids=((0, 99),), vocab_size=10)
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        SpeechHead(16, SlotVocab.full(2, 10), "transformer", heads=3)
