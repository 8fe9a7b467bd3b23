"""Every registered tokenizer honours the SpeechTokenizer contract (DESIGN.md §4), random init."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from speechlm.tokenizers.base import SpeechTokenizer, pad_batch
from speechlm.tokenizers.registry import available, build_tokenizer, load_tokenizer, save_tokenizer
from tests.tokenizers.conftest import tiny_tokenizer_config

NAMES = available()
LENGTHS = (7_001, 4_800, 321)  # samples: not whole frames, one shorter than two frames


@pytest.fixture(scope="module", params=NAMES)
def tok(request: pytest.FixtureRequest) -> SpeechTokenizer:
    torch.manual_seed(0)
    return build_tokenizer(tiny_tokenizer_config(request.param)).eval()


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return pad_batch([0.1 * torch.randn(n, generator=g) for n in LENGTHS])


def test_the_coupled_designs_are_registered() -> None:
    assert {"coupled_rvq", "coupled_vq", "coupled_fsq"} <= set(NAMES)


def test_encode_shapes_lengths_and_code_ranges(tok: SpeechTokenizer) -> None:
    wav, lengths = _batch()
    out = tok.encode(wav, lengths)
    B, K, T = out.codes.shape
    assert (B, K) == (len(LENGTHS), len(tok.streams)) and out.codes.dtype == torch.int64
    expected = [math.ceil(n * tok.frame_rate / tok.sample_rate) for n in LENGTHS]
    assert out.lengths.tolist() == expected and T == max(expected)
    for k, spec in enumerate(tok.streams):
        assert 0 <= int(out.codes[:, k].min()) and int(out.codes[:, k].max()) < spec.codebook_size
    if tok.speaker_dim:
        assert out.speaker is not None and tuple(out.speaker.shape) == (B, tok.speaker_dim)
    else:
        assert out.speaker is None


def test_round_trip_keeps_the_input_length_within_one_frame(tok: SpeechTokenizer) -> None:
    wav, lengths = _batch()
    enc = tok.encode(wav, lengths)
    dec = tok.decode(enc.codes, enc.lengths, enc.speaker)
    assert dec.wav.dim() == 2 and dec.wav.shape[0] == len(LENGTHS)
    assert ((dec.lengths - lengths).abs() <= tok.hop_length).all()
    assert torch.isfinite(dec.wav).all()
    for i, n in enumerate(dec.lengths.tolist()):  # silence past each item's end
        assert dec.wav[i, n:].abs().max().item() == 0.0 if n < dec.wav.shape[1] else True


def test_batched_results_equal_per_item_results(tok: SpeechTokenizer) -> None:
    wav, lengths = _batch()
    enc = tok.encode(wav, lengths)
    dec = tok.decode(enc.codes, enc.lengths, enc.speaker)
    for i, n in enumerate(LENGTHS):
        one = tok.encode(wav[i : i + 1, :n], lengths[i : i + 1])
        t = int(one.lengths[0])
        assert torch.equal(one.codes[0], enc.codes[i, :, :t])
        one_dec = tok.decode(one.codes, one.lengths, one.speaker)
        s = int(one_dec.lengths[0])
        torch.testing.assert_close(one_dec.wav[0, :s], dec.wav[i, :s], atol=1e-4, rtol=1e-4)


def test_save_and_load_give_identical_codes(tok: SpeechTokenizer, tmp_path) -> None:
    wav, lengths = _batch(seed=1)
    save_tokenizer(tok, tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert type(again) is type(tok) and again.tokenizer_config == tok.tokenizer_config
    assert torch.equal(again.encode(wav, lengths).codes, tok.encode(wav, lengths).codes)


def test_bad_inputs_raise_clear_errors(tok: SpeechTokenizer) -> None:
    wav, lengths = _batch()
    with pytest.raises(ValueError, match="22050 Hz"):
        tok.check_sample_rate(22_050)
    with pytest.raises(ValueError, match="empty"):
        tok.encode(torch.zeros(1, 0), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        tok.encode(wav[0], lengths[:1])
    with pytest.raises(ValueError, match="NaN"):
        tok.encode(torch.full((1, 800), float("nan")), torch.tensor([800]))
    enc = tok.encode(wav, lengths)
    bad = enc.codes.clone()
    bad[0, 0, 0] = tok.streams[0].codebook_size
    with pytest.raises(ValueError, match="outside its codebook"):
        tok.decode(bad, enc.lengths, enc.speaker)
    with pytest.raises(ValueError, match="K="):
        tok.decode(enc.codes[:, :0], enc.lengths, enc.speaker)


def test_shipped_checkpoint_drops_ema_statistics_and_keeps_codes(tok: SpeechTokenizer, tmp_path) -> None:
    from safetensors import safe_open

    wav, lengths = _batch(seed=2)
    save_tokenizer(tok, tmp_path / "ship", storage="fp16")
    with safe_open(str(tmp_path / "ship" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert not any(k.endswith((".embed_avg", ".cluster_size")) for k in keys)
    again = load_tokenizer(tmp_path / "ship")
    as_half = copy.deepcopy(tok).half().float()  # what the shipped weights hold
    assert torch.equal(again.encode(wav, lengths).codes, as_half.encode(wav, lengths).codes)
    buffers = dict(again.named_buffers())
    for name, buf in buffers.items():
        if name.endswith(".embed_avg"):
            assert torch.equal(buf, buffers[name.removesuffix("_avg")])
        if name.endswith(".cluster_size"):
            assert torch.all(buf == 1)


def test_int8_decoder_storage_keeps_codes_and_decodes_closely(tok: SpeechTokenizer, tmp_path) -> None:
    from safetensors import safe_open

    wav, lengths = _batch(seed=3)
    save_tokenizer(tok, tmp_path / "fp16", storage="fp16")
    save_tokenizer(tok, tmp_path / "int8", storage="fp16-int8dec")
    with safe_open(str(tmp_path / "int8" / "model.safetensors"), "pt") as f:
        assert f.metadata()["storage"] == "fp16-int8dec"
        int8_keys = [k for k in f.keys() if f.get_slice(k).get_dtype() == "I8"]
    has_decoder = any(name.startswith("decoder.") for name, _ in tok.named_parameters())
    assert bool(int8_keys) == has_decoder and all(k.startswith("decoder.") for k in int8_keys)
    half, packed = load_tokenizer(tmp_path / "fp16"), load_tokenizer(tmp_path / "int8")
    enc_half, enc_packed = half.encode(wav, lengths), packed.encode(wav, lengths)
    assert torch.equal(enc_half.codes, enc_packed.codes)  # the SLM's inputs do not move
    if has_decoder:
        assert (tmp_path / "int8" / "model.safetensors").stat().st_size < (tmp_path / "fp16" / "model.safetensors").stat().st_size
        a = half.decode(enc_half.codes, enc_half.lengths, enc_half.speaker).wav
        b = packed.decode(enc_half.codes, enc_half.lengths, enc_half.speaker).wav
        assert not torch.equal(a, b)  # the decoder really was quantised ...
        assert (a - b).norm() <= 0.05 * a.norm()  # ... and decodes within 5 % of the fp16 decoder
