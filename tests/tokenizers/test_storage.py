"""Weight storage of saved tokenizers (tokenizers/storage.py): int8 rows invert within half a step."""

from __future__ import annotations

import pytest
import torch

from speechlm.tokenizers.storage import SCALE_SUFFIX, dequantize_rows, pack, quantize_rows, unpack


def test_int8_rows_round_trip_within_half_a_step() -> None:
    w = torch.randn(16, 8, 5) * torch.logspace(-3, 1, 16).reshape(-1, 1, 1)  # rows of very different scale
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float16 and scale.shape == (16,)
    back = dequantize_rows(q, scale)
    step = scale.float().reshape(-1, 1, 1)
    assert ((back - w).abs() <= 0.5 * step + 1e-6).all()
    assert q.abs().amax(dim=(1, 2)).min() >= 126  # each row uses its full range


def test_pack_only_touches_large_decoder_weights() -> None:
    state = {
        "decoder.block.weight": torch.randn(64, 32),
        "decoder.norm.weight": torch.randn(64),  # 1-d: kept as fp16
        "decoder.tiny.weight": torch.randn(4, 4),  # too small to be worth a scale per row
        "encoder.conv.weight": torch.randn(64, 32, 3),  # makes the codes: never packed
        "quantizer.index": torch.arange(5),
    }
    packed = pack(state, "fp16-int8dec")
    assert packed["decoder.block.weight"].dtype == torch.int8 and "decoder.block.weight" + SCALE_SUFFIX in packed
    assert packed["decoder.norm.weight"].dtype == torch.float16 and packed["decoder.tiny.weight"].dtype == torch.float16
    assert packed["encoder.conv.weight"].dtype == torch.float16 and packed["quantizer.index"].dtype == torch.int64
    restored = unpack(packed)
    assert set(restored) == set(state)
    assert torch.equal(restored["encoder.conv.weight"], state["encoder.conv.weight"].half())
    assert torch.allclose(restored["decoder.block.weight"], state["decoder.block.weight"], atol=0.05)
    assert pack(state, "fp32")["encoder.conv.weight"].dtype == torch.float32


def test_bad_storage_and_bad_files_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown weight storage 'int4'"):
        pack({}, "int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="without its int8 weight"):
        unpack({"decoder.w" + SCALE_SUFFIX: torch.ones(2)})
    with pytest.raises(ValueError, match="has a scale but is"):
        unpack({"decoder.w": torch.ones(2, 2), "decoder.w" + SCALE_SUFFIX: torch.ones(2)})


def test_repack_rewrites_only_the_weights_and_reports_the_new_fingerprint(tmp_path) -> None:
    from speechlm.tokenizers.base import pad_batch
    from speechlm.tokenizers.checkpoint import repack
    from speechlm.tokenizers.registry import build_tokenizer, load_tokenizer, save_tokenizer
    from tests.tokenizers.conftest import tiny_tokenizer_config

    torch.manual_seed(0)
    save_tokenizer(build_tokenizer(tiny_tokenizer_config("decoupled")), tmp_path / "tok", storage="fp16")
    config = (tmp_path / "tok" / "config.yaml").read_bytes()
    wav, lengths = pad_batch([0.1 * torch.randn(3_000), 0.1 * torch.randn(2_000)])
    codes = load_tokenizer(tmp_path / "tok").encode(wav, lengths).codes
    result = repack(tmp_path / "tok", "fp16-int8dec")
    assert result.bytes_after < result.bytes_before
    assert result.fingerprint_after != result.fingerprint_before  # the decoder's values moved
    assert (tmp_path / "tok" / "config.yaml").read_bytes() == config
    assert torch.equal(load_tokenizer(tmp_path / "tok").encode(wav, lengths).codes, codes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]  # no temporary folder left behind


def test_a_weights_file_with_an_unknown_storage_is_refused(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    from speechlm.tokenizers.registry import build_tokenizer, load_tokenizer, save_tokenizer
    from tests.tokenizers.conftest import tiny_tokenizer_config

    save_tokenizer(build_tokenizer(tiny_tokenizer_config("coupled_fsq")), tmp_path, storage="fp16")
    weights = str(tmp_path / "model.safetensors")
    save_file(load_file(weights), weights, metadata={"storage": "int4"})
    with pytest.raises(ValueError, match="unknown weight storage 'int4'"):
        load_tokenizer(tmp_path)
