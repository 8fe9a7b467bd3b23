import pytest
import torch

from speechlm import config as C
from speechlm.layout.speech import LayoutConfig, SpeechLayout

# A FACodec-like tokenizer: 1 prosody, 2 content, 3 acoustic streams (study Appendix E.2).
SIZES = (11, 13, 7, 5, 5, 5)
NAMES = ("prosody", "content0", "content1", "acoustic0", "acoustic1", "acoustic2")


def random_codes(B: int, T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, n, (B, T), generator=g) for n in SIZES], dim=1)  # [B, 6, T]
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[: min(B, 3)] = torch.tensor([T, 0, min(1, T)])[:B]  # always a full, an empty and a 1-frame item
    return codes, lengths


CONFIGS = [
    LayoutConfig(),  # NTP FWI, the study's default (Table 7/8)
    LayoutConfig(group_size=3),
    LayoutConfig(group_size=6),
    LayoutConfig(group_size=12),
    LayoutConfig(order="cwi", chunk=4),
    LayoutConfig(order="cwi", chunk=5, group_size=6),
    LayoutConfig(streams=(3, 0, 5, 1), group_size=8),
    LayoutConfig(streams=(2,), group_size=5),
    LayoutConfig(streams=(0, 1, 2, 3, 4, 5), order="cwi", chunk=3),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=repr)
@pytest.mark.parametrize("T", [0, 1, 7, 16])
def test_decode_inverts_encode(cfg, T):
    layout = SpeechLayout(cfg, SIZES, NAMES)
    codes, lengths = random_codes(6, T, seed=T)
    codes[torch.arange(T)[None, None, :].expand_as(codes) >= lengths[:, None, None]] = -3  # junk past the lengths
    out = layout.decode(layout.encode(codes, lengths).ids)
    assert torch.equal(out.lengths, lengths)
    T_out = int(lengths.max())
    selected = codes[:, list(cfg.streams), :T_out]
    valid = (torch.arange(T_out)[None, :] < lengths[:, None])[:, None, :].expand_as(selected)
    assert torch.equal(out.codes[valid], selected[valid])
    assert (out.codes[~valid] == 0).all()


@pytest.mark.parametrize("cfg", CONFIGS, ids=repr)
def test_groups_end_once_and_respect_the_allowed_masks(cfg):
    layout = SpeechLayout(cfg, SIZES, NAMES)
    v = layout.vocab
    codes, lengths = random_codes(5, 13, seed=1)
    grouped = layout.encode(codes, lengths)
    B, J, G = grouped.ids.shape
    assert G == cfg.group_size
    assert torch.equal(grouped.lengths, layout.num_groups(lengths))
    assert ((grouped.ids == v.end_id).sum(dim=(1, 2)) == 1).all()
    for b in range(B):
        mask = layout.allowed_mask(torch.arange(J), num_frames=int(lengths[b]))  # [J, G, V]
        assert mask.gather(-1, grouped.ids[b][..., None]).all(), f"item {b}: an id outside its slot's stream"
        assert (grouped.ids[b, grouped.lengths[b] :] == v.pad_id).all()


def test_decoupled_mtp_groups_follow_the_study_definition():
    # study §2.2: G_{j+1} = {p_{jF+1}, c1_{jF+1}, c2_{jF+1}, ..., p_{jF+F}, c1_{jF+F}, c2_{jF+F}}, F = g/K
    layout = SpeechLayout(LayoutConfig(group_size=6), SIZES, NAMES)
    v = layout.vocab
    codes, _ = random_codes(1, 5, seed=4)
    ids = layout.encode(codes, torch.tensor([5])).ids[0]  # [J=3, 6]
    for j in range(3):
        for f in range(2):
            t = 2 * j + f
            expect = [v.offsets[k] + int(codes[0, k, t]) for k in range(3)] if t < 5 else [v.end_id, v.pad_id, v.pad_id]
            assert ids[j, 3 * f : 3 * f + 3].tolist() == expect


def test_fwi_mtp_slots_have_fixed_streams():
    layout = SpeechLayout(LayoutConfig(group_size=6), SIZES, NAMES)
    assert layout.slot_streams() == (0, 1, 2, 0, 1, 2)
    v = layout.vocab
    mask = layout.allowed_mask(0)
    assert mask.shape == (6, v.size)
    for s, k in enumerate(layout.slot_streams()):
        expect = torch.zeros(v.size, dtype=torch.bool)
        expect[v.stream_slice(k)] = True
        expect[[v.end_id, v.pad_id]] = True
        assert torch.equal(mask[s], expect)
    assert torch.equal(layout.allowed_mask(7), mask)  # same at every step


def test_ntp_and_cwi_slots_depend_on_the_step():
    ntp = SpeechLayout(LayoutConfig(), SIZES, NAMES)
    assert ntp.slot_streams() is None
    streams = [int(ntp.vocab.stream_of(ntp.allowed_mask(j)[0].nonzero()[0])) for j in range(6)]
    assert streams == [0, 1, 2, 0, 1, 2]
    cwi = SpeechLayout(LayoutConfig(order="cwi", chunk=2), SIZES, NAMES)
    assert cwi.slot_streams() is None
    streams = [int(cwi.vocab.stream_of(cwi.allowed_mask(j)[0].nonzero()[0])) for j in range(8)]
    assert streams == [0, 0, 1, 1, 2, 2, 0, 0]
    assert SpeechLayout(LayoutConfig(streams=(1,)), SIZES, NAMES).slot_streams() == (0,)


def test_decode_drops_a_trailing_partial_frame():
    layout = SpeechLayout(LayoutConfig(group_size=3), SIZES, NAMES)
    v = layout.vocab
    ids = torch.tensor([[[1, 20, 30], [2, v.end_id, v.pad_id]]])  # frame 2 stopped after its prosody token
    out = layout.decode(ids)
    assert out.lengths.tolist() == [1]
    assert out.codes[0, :, 0].tolist() == [1, 20 - v.offsets[1], 30 - v.offsets[2]]


def test_decode_rejects_an_id_from_the_wrong_stream():
    layout = SpeechLayout(LayoutConfig(group_size=3), SIZES, NAMES)
    ids = torch.tensor([[[1, 2, 30]]])  # slot 1 must hold a content0 id
    with pytest.raises(ValueError, match=r"item 0, frame 0: id 2 is not in stream 1 \('content0'"):
        layout.decode(ids)
    with pytest.raises(ValueError, match=r"\[B, J, G=3\]"):
        layout.decode(torch.zeros(1, 2, 6, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(group_size=4), "group_size=4 must be a multiple of the 3 modelled streams"),
        (dict(group_size=0), "group size must be a positive integer"),
        (dict(streams=()), "at least one"),
        (dict(streams=(0, 0)), "must not repeat"),
        (dict(streams=(0, -1)), "stream indices >= 0"),
        (dict(chunk=0), "chunk must be a positive"),
        (dict(order="zigzag"), "order must be one of"),
    ],
)
def test_bad_config_is_rejected_at_the_door(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LayoutConfig(**kwargs)


def test_config_loads_from_yaml_mapping():
    cfg = C.from_dict(LayoutConfig, {"streams": [0, 1, 2], "order": "cwi", "chunk": 80, "group_size": 6})
    assert cfg == LayoutConfig(order="cwi", group_size=6)
    assert C.from_dict(LayoutConfig, C.to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="group_size=4"):
        C.from_dict(LayoutConfig, {"group_size": 4})


def test_stream_index_out_of_range_names_the_tokenizer_streams():
    with pytest.raises(ValueError, match=r"stream index 6, but the tokenizer has 6 streams"):
        SpeechLayout(LayoutConfig(streams=(0, 6)), SIZES, NAMES)


def test_bad_codes_are_rejected_with_their_position():
    layout = SpeechLayout(LayoutConfig(), SIZES, NAMES)
    codes, _ = random_codes(2, 5, seed=0)
    lengths = torch.tensor([5, 4])
    bad = codes.clone()
    bad[1, 2, 3] = 7  # content1 has 7 codes: 0..6
    expect = r"item 1, stream 2 \('content1'\), frame 3: code 7 is outside the codebook 0..6"
    with pytest.raises(ValueError, match=expect):
        layout.encode(bad, lengths)
    bad[1, 2, 3], bad[1, 2, 4] = 0, 99  # past item 1's length: ignored
    layout.encode(bad, lengths)
    with pytest.raises(ValueError, match="integer tensor"):
        layout.encode(codes.float(), lengths)
    with pytest.raises(ValueError, match="lengths .* within 0..T=5"):
        layout.encode(codes, torch.tensor([6, 0]))
    with pytest.raises(ValueError, match="codes have 3 streams"):
        layout.encode(codes[:, :3], lengths)
