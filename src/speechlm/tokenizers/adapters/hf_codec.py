"""Pretrained codecs from a local transformers folder behind the SpeechTokenizer interface.

The study's baselines (App. A.1) include EnCodec (``facebook/encodec_24khz``) and, through
transformers, DAC and Mimi exist as classes too; nothing is downloaded here — point ``path`` at a
folder made by ``save_pretrained`` (or a downloaded snapshot) and the adapter loads it offline:

    tokenizer: {name: hf_codec, model: {path: /models/encodec_24khz, num_quantizers: 8}}

EnCodec and DAC are coupled RVQ codecs; Mimi distils its first codebook towards WavLM, so it is
reported as semi-decoupled with a ``semantic`` first stream. Items are encoded one at a time, each
padded to whole frames, because these models have no padding mask inside their convolutions — so a
batch gives exactly the per-item result, as the interface requires. Chunked EnCodec models
(48 kHz, per-chunk scales) cannot be expressed as plain codes and are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from speechlm.tokenizers.base import DecodedAudio, SpeechTokenizer, StreamSpec, TokenizerOutput

ARCHITECTURES = ("encodec", "dac", "mimi")


@dataclass(frozen=True)
class HFCodecConfig:
    path: str  # local folder with config.json + weights of an EncodecModel, DacModel or MimiModel
    num_quantizers: int = 0  # codebooks to use (0 = all the model has)


def _load(path: str) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"hf_codec: no config.json in {folder} (expected a transformers codec folder)")
    kind = AutoConfig.from_pretrained(folder).model_type
    if kind not in ARCHITECTURES:
        raise ValueError(f"hf_codec: {folder} holds a {kind!r} model; supported: {', '.join(ARCHITECTURES)}")
    return AutoModel.from_pretrained(folder).eval()


class HFCodec(SpeechTokenizer):
    config_class = HFCodecConfig

    def __init__(self, cfg: HFCodecConfig) -> None:
        super().__init__()
        self.model = _load(cfg.path)
        mc = self.model.config
        self.kind: str = mc.model_type
        self.sample_rate = int(mc.sampling_rate)
        hop = mc.hop_length if self.kind in ("encodec", "dac") else round(mc.sampling_rate / mc.frame_rate)
        self.frame_rate = self.sample_rate / hop
        available = {"encodec": lambda: mc.num_quantizers, "dac": lambda: mc.n_codebooks, "mimi": lambda: mc.num_quantizers}
        total = available[self.kind]()
        self.k = cfg.num_quantizers or total
        if not 1 <= self.k <= total:
            raise ValueError(f"hf_codec: num_quantizers={cfg.num_quantizers} outside [1, {total}] for {cfg.path}")
        if self.kind == "encodec" and mc.chunk_length_s is not None:
            raise ValueError(f"hf_codec: {cfg.path} is a chunked EnCodec (per-chunk scales); use a 24 kHz model")
        self.coupling = "semi_decoupled" if self.kind == "mimi" else "coupled"
        kinds = ["semantic" if (self.kind == "mimi" and k == 0) else "coupled" for k in range(self.k)]
        self.streams = [StreamSpec(f"{self.kind}{k}", kind, int(mc.codebook_size)) for k, kind in enumerate(kinds)]

    def _encode_one(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [n]`` -> ``codes [K, ceil(n / hop)]``."""
        frames = math.ceil(wav.shape[0] / self.hop_length)
        x = F.pad(wav, (0, frames * self.hop_length - wav.shape[0]))[None, None]
        if self.kind == "encodec":
            bandwidth = self.k * self.frame_rate * math.log2(self.streams[0].codebook_size) / 1000
            bandwidth = min(self.model.config.target_bandwidths, key=lambda b: abs(b - bandwidth))
            codes = self.model.encode(x, bandwidth=bandwidth, return_dict=True).audio_codes[0, 0]
        elif self.kind == "dac":
            codes = self.model.encode(x, n_quantizers=self.k, return_dict=True).audio_codes[0]
        else:
            codes = self.model.encode(x, num_quantizers=self.k, return_dict=True).audio_codes[0]
        codes = codes[: self.k, :frames]
        return F.pad(codes, (0, frames - codes.shape[1]))

    def _decode_one(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [K, t]`` -> ``wav [t * hop]``."""
        if self.kind == "encodec":
            wav = self.model.decode(codes[None, None], [None], return_dict=True).audio_values
        else:
            wav = self.model.decode(audio_codes=codes[None], return_dict=True).audio_values
        wav = wav.reshape(-1)[: codes.shape[1] * self.hop_length]
        return F.pad(wav, (0, codes.shape[1] * self.hop_length - wav.shape[0]))

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> TokenizerOutput:
        self.check_wav(wav, lengths)
        frames = self.num_frames(lengths)
        codes = torch.zeros(wav.shape[0], self.k, int(frames.max()), dtype=torch.long, device=wav.device)
        for i, n in enumerate(lengths.tolist()):
            codes[i, :, : int(frames[i])] = self._encode_one(wav[i, :n])
        return TokenizerOutput(codes=codes, lengths=frames)

    @torch.no_grad()
    def decode(
        self, codes: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor | None = None
    ) -> DecodedAudio:
        self.check_codes(codes, lengths)
        if speaker is not None:
            raise ValueError(f"{self.describe()} takes no speaker vector")
        samples = self.num_samples(lengths)
        wav = torch.zeros(codes.shape[0], codes.shape[2] * self.hop_length, device=codes.device)
        for i, t in enumerate(lengths.tolist()):
            wav[i, : int(samples[i])] = self._decode_one(codes[i, :, :t].long())
        return DecodedAudio(wav=wav, lengths=samples)
