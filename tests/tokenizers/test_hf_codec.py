"""The transformers-codec adapter: architectures, stream kinds, refusals (conformance runs it too)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speechlm.tokenizers.adapters.hf_codec import HFCodec, HFCodecConfig
from tests.tokenizers.conftest import tiny_hf_codec_dir


def test_encodec_streams_and_bitrate_follow_the_checkpoint() -> None:
    tok = HFCodec(HFCodecConfig(path=str(tiny_hf_codec_dir()), num_quantizers=1))
    assert tok.coupling == "coupled" and tok.hop_length == 32 and tok.frame_rate == 500
    assert [s.codebook_size for s in tok.streams] == [32] and tok.bitrate == pytest.approx(2500)
    out = tok.encode(0.1 * torch.randn(1, 640), torch.tensor([640]))
    assert out.codes.shape == (1, 1, 20)


def test_mimi_is_semi_decoupled_with_a_semantic_first_stream(tmp_path: Path) -> None:
    from transformers import MimiConfig, MimiModel

    cfg = MimiConfig(
        sampling_rate=16_000, frame_rate=50.0, hidden_size=16, num_filters=4, upsampling_ratios=[4, 4],
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, head_dim=8, intermediate_size=32,
        codebook_size=32, codebook_dim=16, num_quantizers=3, num_semantic_quantizers=1, upsample_groups=16,
        vector_quantization_hidden_dimension=16, sliding_window=16,
    )
    MimiModel(cfg).save_pretrained(tmp_path)
    tok = HFCodec(HFCodecConfig(path=str(tmp_path)))
    assert tok.coupling == "semi_decoupled" and [s.kind for s in tok.streams] == ["semantic", "coupled", "coupled"]
    enc = tok.encode(0.1 * torch.randn(2, 1000), torch.tensor([1000, 700]))
    assert enc.lengths.tolist() == [4, 3] and tok.decode(enc.codes, enc.lengths).wav.shape == (2, 1280)


def test_missing_or_foreign_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        HFCodec(HFCodecConfig(path=str(tmp_path)))
    with pytest.raises(ValueError, match="num_quantizers=9"):
        HFCodec(HFCodecConfig(path=str(tiny_hf_codec_dir()), num_quantizers=9))
