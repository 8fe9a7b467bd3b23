"""Coupled codecs: one encoder, one entangled family of codes, one decoder (study §3.2, Table 5).

``log-mel -> FrameEncoder -> Quantizer -> WaveDecoder (iSTFT)``, with the quantizer chosen by the
registry name:

- ``coupled_rvq``: residual VQ with quantizer dropout, Nq codebooks — the SoundStream / EnCodec
  family (study Table 1 "Encodec", Nq = 4/8);
- ``coupled_vq``: a single VQ codebook — BigCodec (8192 entries, 80 Hz) / WavTokenizer (4096, 75 Hz);
- ``coupled_fsq``: a single FSQ codebook — X-codec2 / Llasa (and StableCodec's FSQ bottleneck).

Every stream carries content, prosody and timbre together ("coupled"), which the study finds hard
for an LM to model (§4.1); these are the baselines the (semi-)decoupled designs are compared to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from speechlm.tokenizers.base import CodecTrainOutput, DecodedAudio, SpeechTokenizer, StreamSpec, TokenizerOutput
from speechlm.tokenizers.base import frame_mask
from speechlm.tokenizers.modules import DecoderConfig, EncoderConfig, FrameEncoder, MelConfig, WaveDecoder
from speechlm.tokenizers.quantizers import Quantizer, QuantizerConfig, QuantizerKind

# encode/decode pad the time axis up to a multiple of this many frames. The quantiser library traces
# and caches its einx/einops ops per input shape (~1.5 s per new shape on one CPU core), and oneDNN
# caches conv primitives per shape: with bucketed lengths, variable-length inference reuses a few
# shapes. Padding is masked, so codes and audio are unchanged (conformance test: batch == per item).
BUCKET_FRAMES = 50


def _ceil_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class CoupledConfig:
    sample_rate: int = 16000  # Hz
    frame_rate: float = 50.0  # frames/s; sample_rate / frame_rate must be an integer (hop)
    latent_dim: int = 128  # width of the quantised latent
    mel: MelConfig = field(default_factory=MelConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def __post_init__(self) -> None:
        hop = self.sample_rate / self.frame_rate
        if self.frame_rate <= 0 or abs(hop - round(hop)) > 1e-6:
            raise ValueError(
                f"sample_rate {self.sample_rate} / frame_rate {self.frame_rate} = {hop} must be a whole "
                "number of samples per frame"
            )


class CoupledCodec(SpeechTokenizer):
    config_class = CoupledConfig
    coupling = "coupled"

    def __init__(self, cfg: CoupledConfig, quantizer: QuantizerKind = "rvq") -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.frame_rate = cfg.frame_rate
        hop = self.hop_length
        self.encoder = FrameEncoder(cfg.mel, cfg.encoder, cfg.sample_rate, hop, cfg.latent_dim)
        self.quantizer = Quantizer(quantizer, cfg.quantizer, cfg.latent_dim)
        self.decoder = WaveDecoder(cfg.decoder, cfg.latent_dim, hop)
        self.streams = [
            StreamSpec(name=f"{quantizer}{k}", kind="coupled", codebook_size=size)
            for k, size in enumerate(self.quantizer.codebook_sizes)
        ]

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> CodecTrainOutput:
        """Training pass: ``wav [B, N]`` -> reconstruction ``[B, T * hop]`` + commitment loss."""
        self.check_wav(wav, lengths)
        frames = self.num_frames(lengths)
        z = self.encoder(wav, frames)
        q = self.quantizer(z, frame_mask(frames, z.shape[-1]))
        return CodecTrainOutput(wav=self.decoder(q.z, frames), losses={"commit": q.loss})

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> TokenizerOutput:
        self.check_wav(wav, lengths)
        frames = self.num_frames(lengths)
        T = int(frames.max())
        padded = F.pad(wav, (0, _ceil_to(T, BUCKET_FRAMES) * self.hop_length - wav.shape[1]))
        z = self.encoder(padded, frames)
        q = self.quantizer(z, frame_mask(frames, z.shape[-1]))
        return TokenizerOutput(codes=q.codes[:, :, :T], lengths=frames)

    @torch.no_grad()
    def decode(
        self, codes: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor | None = None
    ) -> DecodedAudio:
        self.check_codes(codes, lengths)
        if speaker is not None:
            raise ValueError(f"{self.describe()} is coupled: timbre lives in the codes, it takes no speaker vector")
        T = codes.shape[2]
        z = self.quantizer.decode(F.pad(codes.long(), (0, _ceil_to(T, BUCKET_FRAMES) - T)))
        wav = self.decoder(z, lengths)[:, : T * self.hop_length]
        return DecodedAudio(wav=wav, lengths=self.num_samples(lengths))
