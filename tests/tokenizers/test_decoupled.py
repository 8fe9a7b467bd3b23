"""Decoupled codec: gradient reversal, partial decoding, speaker terms, recipe integration, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speechlm import config
from speechlm.tokenizers.base import pad_batch
from speechlm.tokenizers.decoupled import DecoupledCodec, grad_reverse
from speechlm.tokenizers.registry import build_tokenizer, load_tokenizer, save_tokenizer
from speechlm.tokenizers.teacher import SemanticTeacher, TeacherConfig, save_teacher
from tests.tokenizers.conftest import CONFIG_DIR, tiny_tokenizer_config


@pytest.fixture(autouse=True)
def one_thread():
    """On a shared 2-core machine one intra-op thread is several times faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _codec() -> DecoupledCodec:
    torch.manual_seed(0)
    return build_tokenizer(tiny_tokenizer_config("decoupled"))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return pad_batch([0.1 * torch.randn(n, generator=g) for n in (6000, 4000, 3000)])


def test_gradient_reversal_negates_and_scales_the_gradient() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    (grad_reverse(x, 0.5) * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * w)
    y = torch.randn(4, 3)
    torch.testing.assert_close(grad_reverse(y, 2.0), y)  # identity forward


def test_streams_and_speaker_vector() -> None:
    codec = _codec().eval()
    assert [s.kind for s in codec.streams] == ["prosody", "content", "content", "acoustic", "acoustic", "acoustic"]
    enc = codec.encode(*_batch())
    assert enc.speaker is not None and enc.speaker.shape == (3, codec.speaker_dim)


def test_prosody_and_content_alone_decode_without_the_acoustic_latent() -> None:
    codec = _codec().eval()
    enc = codec.encode(*_batch())
    c, n, spk = enc.codes, enc.lengths, enc.speaker
    partial = codec.decode_streams(c[:, :3], (0, 1, 2), n, spk).wav
    z = codec.prosody_q.decode(c[:, :1]) + codec.content_q.decode(c[:, 1:3])
    torch.testing.assert_close(partial, codec.decoder(z, n, spk))
    torch.testing.assert_close(codec.decode(c, n, spk).wav, codec.decode_streams(c, tuple(range(6)), n, spk).wav)
    assert not torch.allclose(partial, codec.decode(c, n, spk).wav)  # the acoustic codes do contribute


def test_partial_decoding_refuses_bad_stream_sets() -> None:
    codec = _codec().eval()
    enc = codec.encode(*_batch())
    with pytest.raises(ValueError, match="not a prefix"):
        codec.decode_streams(enc.codes[:, [0, 2]], (0, 2), enc.lengths, enc.speaker)
    with pytest.raises(ValueError, match="distinct"):
        codec.decode_streams(enc.codes[:, :2], (1, 1), enc.lengths, enc.speaker)
    with pytest.raises(ValueError, match="speaker vector"):
        codec.decode(enc.codes, enc.lengths, None)


def test_speaker_terms_learn_and_bad_ids_are_refused() -> None:
    codec = _codec().train()
    wav, lengths = _batch()
    speakers = torch.tensor([0, 1, 2])
    opt = torch.optim.Adam(codec.parameters(), lr=3e-3)
    first = last = None
    for _ in range(8):
        out = codec(wav, lengths, speakers)
        assert {"commit", "adversary", "speaker"} <= set(out.losses)
        opt.zero_grad()
        out.losses["speaker"].backward()
        opt.step()
        first = first if first is not None else out.losses["speaker"].item()
        last = out.losses["speaker"].item()
    assert last < 0.7 * first
    with pytest.raises(ValueError, match="num_speakers"):
        codec(wav, lengths, torch.tensor([0, 1, codec.cfg.num_speakers]))


def test_acoustic_dropout_only_in_training() -> None:
    codec = _codec().eval()
    wav, lengths = _batch()
    torch.testing.assert_close(codec(wav, lengths).wav, codec(wav, lengths).wav)


def test_save_load_gives_identical_codes_and_timbre(tmp_path: Path) -> None:
    codec = _codec().eval()
    wav, lengths = _batch()
    loaded = load_tokenizer(save_tokenizer(codec, tmp_path / "c"))
    a, b = codec.encode(wav, lengths), loaded.encode(wav, lengths)
    assert torch.equal(a.codes, b.codes)
    torch.testing.assert_close(a.speaker, b.speaker)


def test_recipe_feeds_teacher_units_and_speaker_labels(tiny_corpus: Path, tmp_path: Path) -> None:
    from speechlm.tokenizers.train import CodecTrainConfig, train_codec

    teacher = SemanticTeacher(TeacherConfig(hidden_size=32, num_layers=1, num_heads=2, feature_layer=1, n_clusters=8))
    teacher_dir = save_teacher(teacher, tmp_path / "teacher")
    overrides = [
        f"data.corpus={tiny_corpus}",
        f"tokenizer.model.teacher={teacher_dir}",
        f"out_dir={tmp_path / 'run'}",
        "steps=3",
        "log_every=1",
        "save_every=3",
        "data.val_items=2",
    ]
    ckpt = train_codec(config.load(CodecTrainConfig, CONFIG_DIR / "tiny_decoupled.yaml", overrides))
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"units", "adversary", "speaker", "mel"} <= set(rows[0])
    assert load_tokenizer(ckpt).coupling == "decoupled"


def test_warp_scales_frequencies_and_one_is_the_identity() -> None:
    from speechlm.tokenizers.modules import warp_frequencies

    power = torch.zeros(2, 65, 3)
    power[:, 10] = 1.0  # a peak at bin 10
    torch.testing.assert_close(warp_frequencies(power, torch.ones(2)), power)
    warped = warp_frequencies(power, torch.tensor([2.0, 0.5]))
    assert int(warped[0, :, 0].argmax()) == 20 and int(warped[1, :, 0].argmax()) == 5
    assert warped[0, 33:].abs().sum() == 0  # sources above Nyquist are silent
    with pytest.raises(ValueError, match="positive"):
        warp_frequencies(power, torch.tensor([1.0, 0.0]))


def test_training_only_knobs_change_training_not_the_codes_or_fingerprint() -> None:
    from dataclasses import replace

    from speechlm.data.codes import tokenizer_fingerprint

    plain = _codec().eval()
    cfg = plain.tokenizer_config
    knobs = replace(cfg, model=replace(cfg.model, content_warp=0.2, adversary_frames=True))
    tuned = build_tokenizer(knobs).eval()
    tuned.load_state_dict(plain.state_dict())
    assert tokenizer_fingerprint(tuned) == tokenizer_fingerprint(plain)
    torch.testing.assert_close(tuned.encode(*_batch()).codes, plain.encode(*_batch()).codes)
    changed = build_tokenizer(replace(cfg, model=replace(cfg.model, acoustic_dropout=0.25)))
    changed.load_state_dict(plain.state_dict())
    assert tokenizer_fingerprint(changed) != tokenizer_fingerprint(plain)  # other fields still count


def test_warped_content_and_frame_adversaries_train() -> None:
    from dataclasses import replace

    cfg = tiny_tokenizer_config("decoupled")
    torch.manual_seed(0)
    model = replace(cfg.model, content_warp=0.2, content_consistency=1.0, adversary_frames=True)
    codec = build_tokenizer(replace(cfg, model=model)).train()
    out = codec(*_batch(), torch.tensor([0, 1, 2]))
    assert {"adversary", "speaker", "commit", "consistency"} <= out.losses.keys()
    assert 0 < out.losses["consistency"].item() <= 2.0
    sum(out.losses.values()).backward()
    assert codec.content_adversary[0].weight.grad is not None and codec.content_in.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="content_warp"):
        replace(cfg.model, content_warp=0.9)
    with pytest.raises(ValueError, match="needs content_warp"):
        replace(cfg.model, content_consistency=1.0)
