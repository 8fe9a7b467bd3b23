"""Semi-decoupled codec (SpeechTokenizer, Zhang et al. 2024): an RVQ whose first level is distilled to semantics.

``log-mel -> FrameEncoder -> RVQ (Nq levels) -> WaveDecoder`` exactly like ``coupled_rvq``, plus one
training term (SpeechTokenizer §3.2): the first level's quantised output ``Q1 [B,T,D]`` is projected
by ``A`` to the teacher's width and pulled towards the semantic teacher's features ``S`` by cosine
similarity, so RVQ-1 carries content and the residual levels "fill in" timbre and other detail:

- ``distill_axis: t`` (SpeechTokenizer's continuous distillation along time, eq. 2):
  ``L = -1/T Σ_t log σ(cos(A Q1[t], S[t]))``;
- ``distill_axis: d`` (their "D-axis" loss, eq. 3): the same over feature dimensions,
  ``L = -1/D Σ_d log σ(cos(A Q1[:, d], S[:, d]))`` — it matches each dimension's trajectory in time.

The teacher (:mod:`speechlm.tokenizers.teacher`, HuBERT-style, trained on the corpus) is needed
only in training: :meth:`prepare_training` loads it from ``cfg.teacher`` and keeps it outside the
state dict, so checkpoints hold the codec alone. Stream 0 is ``semantic``, the others ``acoustic``
(study §2.1: semi-decoupled = semantic first level + coupled residual detail).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechlm.tokenizers.base import CodecTrainOutput, DecodedAudio, SpeechTokenizer, StreamSpec, TokenizerOutput
from speechlm.tokenizers.base import frame_mask
from speechlm.tokenizers.modules import DecoderConfig, EncoderConfig, FrameEncoder, MelConfig, WaveDecoder
from speechlm.tokenizers.quantizers import Quantizer, QuantizerConfig
from speechlm.tokenizers.teacher import SemanticTeacher, load_teacher, teacher_targets

if TYPE_CHECKING:
    from speechlm.data.manifest import Corpus


@dataclass(frozen=True)
class SemiDecoupledConfig:
    sample_rate: int = 16000  # Hz
    frame_rate: float = 50.0  # frames/s (SpeechTokenizer: 50 Hz, like its HuBERT teacher)
    latent_dim: int = 128
    mel: MelConfig = field(default_factory=MelConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)  # always an RVQ here
    teacher: str = "checkpoints/codec/teacher"  # training only: semantic teacher checkpoint folder
    teacher_dim: int = 128  # width of the teacher's features (checked when the teacher is attached)
    distill_axis: Literal["t", "d"] = "t"
    distill_weight: float = 10.0  # λ_distill relative to the recipe's mel-L1 weight of 15

    def __post_init__(self) -> None:
        hop = self.sample_rate / self.frame_rate
        if self.frame_rate <= 0 or abs(hop - round(hop)) > 1e-6:
            raise ValueError(f"sample_rate {self.sample_rate} / frame_rate {self.frame_rate} = {hop} is not a whole hop")
        if self.quantizer.num_quantizers < 2:
            raise ValueError(
                f"quantizer.num_quantizers={self.quantizer.num_quantizers}: a semi-decoupled RVQ needs a semantic "
                "first level plus at least one residual level"
            )
        if self.distill_weight < 0:
            raise ValueError(f"distill_weight={self.distill_weight} must be >= 0")


def distillation_loss(pred: Tensor, target: Tensor, mask: Tensor, axis: Literal["t", "d"]) -> Tensor:
    """SpeechTokenizer eq. 2/3: ``-mean log σ(cos)`` of ``pred``/``target [B,T,D]`` over valid frames ``mask [B,T]``."""
    m = mask.unsqueeze(-1).to(pred.dtype)
    if axis == "t":
        cos = F.cosine_similarity(pred, target, dim=-1)  # [B,T]
        return -(F.logsigmoid(cos) * mask).sum() / mask.sum().clamp(min=1)
    cos = F.cosine_similarity(pred * m, target * m, dim=1)  # [B,D]: each dimension's trajectory in time
    return -F.logsigmoid(cos).mean()


class SemiDecoupledCodec(SpeechTokenizer):
    config_class = SemiDecoupledConfig
    coupling = "semi_decoupled"

    def __init__(self, cfg: SemiDecoupledConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.frame_rate = cfg.frame_rate
        hop = self.hop_length
        self.encoder = FrameEncoder(cfg.mel, cfg.encoder, cfg.sample_rate, hop, cfg.latent_dim)
        self.quantizer = Quantizer("rvq", cfg.quantizer, cfg.latent_dim)
        self.decoder = WaveDecoder(cfg.decoder, cfg.latent_dim, hop)
        self.semantic_proj = nn.Linear(cfg.latent_dim, cfg.teacher_dim)  # A in SpeechTokenizer eq. 2
        size = cfg.quantizer.codebook_size
        self.streams = [StreamSpec("rvq0", "semantic", size)] + [
            StreamSpec(f"rvq{k}", "acoustic", size) for k in range(1, cfg.quantizer.num_quantizers)
        ]
        self._teacher: SemanticTeacher | None = None

    # -- training ---------------------------------------------------------------------------

    def prepare_training(self, corpus: Corpus) -> None:
        """Recipe hook: load the frozen teacher named by ``cfg.teacher``."""
        self.attach_teacher(load_teacher(self.cfg.teacher))

    def attach_teacher(self, teacher: SemanticTeacher) -> None:
        """Use ``teacher`` for distillation; it is kept out of ``state_dict`` (training-only)."""
        if teacher.cfg.hidden_size != self.cfg.teacher_dim:
            raise ValueError(f"teacher features are {teacher.cfg.hidden_size}-d but teacher_dim={self.cfg.teacher_dim}")
        if teacher.cfg.sample_rate != self.sample_rate:
            raise ValueError(f"teacher runs at {teacher.cfg.sample_rate} Hz, the codec at {self.sample_rate} Hz")
        self.__dict__["_teacher"] = teacher.eval().requires_grad_(False)  # not a registered submodule

    def forward(self, wav: Tensor, lengths: Tensor) -> CodecTrainOutput:
        """Training pass: reconstruction + commitment + (with a teacher) RVQ-1 distillation."""
        self.check_wav(wav, lengths)
        frames = self.num_frames(lengths)
        z = self.encoder(wav, frames)  # [B,D,T]
        mask = frame_mask(frames, z.shape[-1])
        q = self.quantizer(z, mask)
        losses = {"commit": q.loss}
        if self._teacher is not None and self.cfg.distill_weight > 0:
            target = teacher_targets(self._teacher.to(wav.device), wav, lengths, z.shape[-1])
            # Q1 with a straight-through gradient to the encoder (the EMA codebook needs none).
            q1 = self.quantizer.decode(q.codes[:, :1])
            q1 = z + (q1 - z).detach()
            pred = self.semantic_proj(q1.transpose(1, 2))
            loss = distillation_loss(pred, target.features, mask & target.mask, self.cfg.distill_axis)
            losses["distill"] = self.cfg.distill_weight * loss
        return CodecTrainOutput(wav=self.decoder(q.z, frames), losses=losses)

    # -- the SpeechTokenizer interface ------------------------------------------------------

    @torch.no_grad()
    def encode(self, wav: Tensor, lengths: Tensor) -> TokenizerOutput:
        self.check_wav(wav, lengths)
        frames = self.num_frames(lengths)
        z = self.encoder(wav, frames)
        q = self.quantizer(z, frame_mask(frames, z.shape[-1]))
        return TokenizerOutput(codes=q.codes, lengths=frames)

    @torch.no_grad()
    def decode(self, codes: Tensor, lengths: Tensor, speaker: Tensor | None = None) -> DecodedAudio:
        self.check_codes(codes, lengths)
        if speaker is not None:
            raise ValueError(f"{self.describe()} takes no speaker vector: timbre lives in the residual levels")
        wav = self.decoder(self.quantizer.decode(codes.long()), lengths)
        return DecodedAudio(wav=wav, lengths=self.num_samples(lengths))
