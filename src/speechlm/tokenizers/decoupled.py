"""Decoupled codec (FACodec, Ju et al. 2024 / NaturalSpeech 3 §3.2): factorised prosody, content, acoustic codes + timbre.

The study's best tokenizer family (§2.1, §4.1, Fig. 1 right): speech is split into subspaces that an
LM can model separately — and the study's LM models only "prosody + 2 content" (App. E.2, Table 7),
leaving timbre to a global vector (App. B) that the SLM's speaker-aware mode consumes (§2.3).

::

    wav ─► low mel bins (first 20 of 80, mean-normalised) ─► ProsodyEncoder ─► VQ ────────────► z_p ┐
    wav ─► FrameEncoder ─► h ─┬─► 1x1 ─► RVQ (2 levels)   content ─► z_c ─(unit head: teacher units)┤
                              ├─► 1x1 ─► RVQ (3 levels)   acoustic detail ─► z_a (dropped at random)┤ Σ ─► WaveDecoder ─► wav
                              └─► TimbreEncoder (transformer, masked mean) ─► g [B,Ds] ── AdaLN ────┘

Streams (K = 6, as FACodec's 1 + 2 + 3): ``prosody, content0, content1, acoustic0..2``.
Training terms beyond the recipe's reconstruction loss (FACodec §3.2.2 "information disentangling"):

- ``units``: the content codes predict the semantic teacher's units (cross-entropy), so they carry
  what is said (FACodec supervises content with phones; the corpus has no aligner, the teacher does);
- ``adversary``: speaker classifiers on the utterance-pooled prosody and content latents, behind a
  gradient reversal layer (Ganin & Lempitsky 2015) — the classifiers learn to find the speaker while
  the encoders learn to hide it, so identity leaks out of those codes;
- ``speaker``: a speaker classifier on the timbre vector, so the vector carries identity;
- acoustic dropout: the acoustic codes are zeroed for a random half of the batch, so prosody +
  content + timbre alone decode to speech — the 3-of-6 setting the SLM generates.

Two optional training-only terms aim at content codes free of timbre (both off in the session-2
checkpoint; the twin probe of :mod:`speechlm.tokenizers.probes` measures their effect):

- ``content_warp``: the content branch encodes a copy of the input whose frequencies are all scaled
  by a random factor (VTLP; ContentVec, Qian et al. 2022, uses the same idea with pitch/formant
  shifts) while the decoder must still rebuild the *original* — what the scale changes (pitch,
  formants) has to come from the timbre vector and prosody codes, not from the content codes;
  ``content_consistency`` adds an explicit pull: the cosine distance between the content latents
  (before quantisation) of the warped and the plain input;
- ``adversary_frames``: the gradient-reversed speaker classifiers read every frame rather than the
  utterance mean — an LM reads tokens, and a mean can be speaker-free while its frames are not.

Speaker labels (``forward(..., speakers)``) are indices into the corpus' speakers sorted by name;
the teacher is loaded by :meth:`DecoupledCodec.prepare_training` and kept out of the state dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechlm.config import TRAINING_ONLY
from speechlm.tokenizers.base import CodecTrainOutput, DecodedAudio, SpeechTokenizer, StreamSpec, TokenizerOutput
from speechlm.tokenizers.base import frame_mask
from speechlm.tokenizers.modules import (
    ConvNeXtBlock,
    DecoderConfig,
    EncoderConfig,
    FrameEncoder,
    LogMel,
    MelConfig,
    WaveDecoder,
)
from speechlm.tokenizers.quantizers import Quantizer, QuantizerConfig
from speechlm.tokenizers.teacher import SemanticTeacher, load_teacher, teacher_targets

if TYPE_CHECKING:
    from speechlm.data.manifest import Corpus

PROSODY, CONTENT, ACOUSTIC = "prosody", "content", "acoustic"


@dataclass(frozen=True)
class ProsodyConfig:
    bins: int = 20  # low mel bins fed to the prosody encoder (FACodec: the first 20 of 80)
    dim: int = 96
    intermediate_dim: int = 192
    layers: int = 2
    kernel_size: int = 7


@dataclass(frozen=True)
class TimbreConfig:
    layers: int = 2  # transformer blocks (FACodec: 4)
    heads: int = 4
    intermediate_dim: int = 256


@dataclass(frozen=True)
class DecoupledConfig:
    sample_rate: int = 16000  # Hz
    frame_rate: float = 50.0  # frames/s (FACodec: 80 Hz; 50 Hz matches the teacher's grid)
    latent_dim: int = 64  # width of every quantised latent and of the decoder input
    speaker_dim: int = 128  # Ds of the timbre vector (FACodec: 256)
    mel: MelConfig = field(default_factory=MelConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    prosody: ProsodyConfig = field(default_factory=ProsodyConfig)
    timbre: TimbreConfig = field(default_factory=TimbreConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)  # shared settings; counts below
    content_quantizers: int = 2
    acoustic_quantizers: int = 3
    num_speakers: int = 16  # classifier width; must cover the training corpus' speakers
    num_units: int = 50  # the teacher's n_clusters
    teacher: str = "checkpoints/codec/teacher"  # training only
    unit_weight: float = 1.0
    adversary_weight: float = 1.0
    grl_scale: float = 1.0  # λ of the gradient reversal layer
    speaker_weight: float = 1.0
    acoustic_dropout: float = 0.5  # probability that an item trains without its acoustic codes
    # Training-only (left out of the tokenizer fingerprint): content invariance, see the module docstring.
    content_warp: float = field(default=0.0, metadata=TRAINING_ONLY)  # log-warp range w: α = exp(U(-w, w)); 0 = off
    content_consistency: float = field(default=0.0, metadata=TRAINING_ONLY)  # weight of 1 - cos(warped, plain)
    adversary_frames: bool = field(default=False, metadata=TRAINING_ONLY)  # per-frame (not pooled) adversaries

    def __post_init__(self) -> None:
        hop = self.sample_rate / self.frame_rate
        if self.frame_rate <= 0 or abs(hop - round(hop)) > 1e-6:
            raise ValueError(f"sample_rate {self.sample_rate} / frame_rate {self.frame_rate} = {hop} is not a whole hop")
        if not 0 < self.prosody.bins <= self.mel.n_mels:
            raise ValueError(f"prosody.bins={self.prosody.bins} must be in [1, mel.n_mels={self.mel.n_mels}]")
        if self.content_quantizers < 1 or self.acoustic_quantizers < 1:
            raise ValueError(
                f"content_quantizers={self.content_quantizers} and acoustic_quantizers={self.acoustic_quantizers} "
                "must be >= 1"
            )
        if self.speaker_dim < 1 or self.num_speakers < 2:
            raise ValueError(f"speaker_dim={self.speaker_dim} must be >= 1 and num_speakers={self.num_speakers} >= 2")
        if not 0.0 <= self.content_warp <= 0.5:
            raise ValueError(f"content_warp={self.content_warp} must be in [0, 0.5] (a log-frequency scale)")
        if self.content_consistency < 0 or (self.content_consistency > 0 and self.content_warp == 0):
            raise ValueError(f"content_consistency={self.content_consistency} must be >= 0 and needs content_warp > 0")
        if not 0.0 <= self.acoustic_dropout < 1.0:
            raise ValueError(f"acoustic_dropout={self.acoustic_dropout} must be in [0, 1)")
        if self.latent_dim % self.timbre.heads:
            raise ValueError(f"latent_dim={self.latent_dim} is not divisible by timbre.heads={self.timbre.heads}")


class _GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-scale`` (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return -ctx.scale * grad, None


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    return _GradientReversal.apply(x, scale)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """``x [B,D,T]``, ``mask [B,T]`` -> per-item mean over valid frames ``[B,D]``."""
    m = mask.unsqueeze(1).to(x.dtype)
    return (x * m).sum(-1) / m.sum(-1).clamp(min=1.0)


class ProsodyEncoder(nn.Module):
    """``wav [B,N]`` -> ``[B,out_dim,T]`` from the low mel bins, mean-normalised per utterance.

    The low bins hold F0 and its first harmonics (FACodec's prosody input); subtracting each
    utterance's mean spectrum removes the static, speaker-typical part before the codes see it.
    """

    def __init__(self, mel: MelConfig, cfg: ProsodyConfig, sample_rate: int, hop_length: int, out_dim: int) -> None:
        super().__init__()
        self.bins, self.hop_length = cfg.bins, hop_length
        self.mel = LogMel(mel, sample_rate, hop_length)
        self.stem = nn.Conv1d(cfg.bins, cfg.dim, cfg.kernel_size, padding=cfg.kernel_size // 2)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.intermediate_dim, cfg.kernel_size) for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.proj = nn.Linear(cfg.dim, out_dim)

    def forward(self, wav: Tensor, frames: Tensor) -> Tensor:
        t = math.ceil(wav.shape[-1] / self.hop_length)
        low = self.mel(F.pad(wav, (0, t * self.hop_length - wav.shape[-1])))[:, : self.bins]  # [B,bins,T]
        valid = frame_mask(frames, t)
        mask = valid.unsqueeze(1).float()
        x = (low - masked_mean(low, valid).unsqueeze(-1)) * mask
        x = self.stem(x) * mask
        for block in self.blocks:
            x = block(x, mask)
        return self.proj(self.norm(x.transpose(1, 2))).transpose(1, 2) * mask


class TimbreEncoder(nn.Module):
    """Encoder states ``h [B,D,T]`` -> one global timbre vector ``[B,Ds]`` (FACodec App. B / study App. B)."""

    def __init__(self, cfg: TimbreConfig, dim: int, out_dim: int) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            dim, cfg.heads, cfg.intermediate_dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        x = self.blocks(h.transpose(1, 2), src_key_padding_mask=~mask).transpose(1, 2)
        return self.proj(masked_mean(x, mask))


def _speaker_classifier(dim: int, num_speakers: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, num_speakers))


@dataclass(frozen=True)
class Factorised:
    """Quantised subspaces of one batch (training and encoding share this)."""

    z_prosody: Tensor  # [B,Dl,T]
    z_content: Tensor  # [B,Dl,T]
    z_acoustic: Tensor  # [B,Dl,T]
    codes: Tensor  # [B,6,T] prosody, content..., acoustic...
    speaker: Tensor  # [B,Ds] timbre vector
    content_latent: Tensor  # [B,Dl,T] content branch before quantisation (from the warped input when warping)
    h: Tensor  # [B,D,T] encoder states of the input as it is
    commit: Tensor  # scalar commitment loss of the three quantizers
    frames: Tensor  # [B] valid frames
    mask: Tensor  # [B,T] bool


class DecoupledCodec(SpeechTokenizer):
    config_class = DecoupledConfig
    coupling = "decoupled"
    uses_speaker_labels = True  # the codec recipe passes corpus speaker indices to forward()

    def __init__(self, cfg: DecoupledConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.frame_rate = cfg.frame_rate
        self.speaker_dim = cfg.speaker_dim
        hop, d = self.hop_length, cfg.latent_dim
        self.encoder = FrameEncoder(cfg.mel, cfg.encoder, cfg.sample_rate, hop, d)
        self.prosody_encoder = ProsodyEncoder(cfg.mel, cfg.prosody, cfg.sample_rate, hop, d)
        self.content_in = nn.Conv1d(d, d, 1)
        self.acoustic_in = nn.Conv1d(d, d, 1)
        q = cfg.quantizer
        self.prosody_q = Quantizer("vq", q, d)
        self.content_q = Quantizer("rvq", replace(q, num_quantizers=cfg.content_quantizers, dropout=False), d)
        self.acoustic_q = Quantizer("rvq", replace(q, num_quantizers=cfg.acoustic_quantizers), d)
        self.timbre_encoder = TimbreEncoder(cfg.timbre, d, cfg.speaker_dim)
        self.decoder = WaveDecoder(cfg.decoder, d, hop, cond_dim=cfg.speaker_dim)
        # Training-only heads (small; kept in the checkpoint so training can resume).
        self.unit_head = nn.Linear(d, cfg.num_units)
        self.content_adversary = _speaker_classifier(d, cfg.num_speakers)
        self.prosody_adversary = _speaker_classifier(d, cfg.num_speakers)
        self.speaker_head = nn.Linear(cfg.speaker_dim, cfg.num_speakers)
        size = q.codebook_size
        self.streams = (
            [StreamSpec(PROSODY, "prosody", size)]
            + [StreamSpec(f"{CONTENT}{k}", "content", size) for k in range(cfg.content_quantizers)]
            + [StreamSpec(f"{ACOUSTIC}{k}", "acoustic", size) for k in range(cfg.acoustic_quantizers)]
        )
        self._teacher: SemanticTeacher | None = None

    # -- stream groups ----------------------------------------------------------------------

    def stream_indices(self, kind: str) -> tuple[int, ...]:
        """Indices of the streams of ``kind`` ("prosody" | "content" | "acoustic")."""
        found = tuple(k for k, s in enumerate(self.streams) if s.kind == kind)
        if not found:
            raise ValueError(f"no stream of kind {kind!r}; streams are {[s.kind for s in self.streams]}")
        return found

    # -- analysis ---------------------------------------------------------------------------

    def factorise(self, wav: Tensor, lengths: Tensor, content_warp: Tensor | None = None) -> Factorised:
        """Encode ``wav [B,N]`` into the three quantised subspaces and the timbre vector.

        ``content_warp [B]`` (training): the content codes come from the input with its frequencies
        scaled by these factors; everything else sees the input as it is.
        """
        self.check_wav(wav, lengths)
        frames = self.num_frames(lengths)
        h = self.encoder(wav, frames)  # [B,D,T]
        mask = frame_mask(frames, h.shape[-1])
        qp = self.prosody_q(self.prosody_encoder(wav, frames), mask)
        h_content = h if content_warp is None else self.encoder(wav, frames, content_warp)
        content_latent = self.content_in(h_content)
        qc = self.content_q(content_latent, mask)
        qa = self.acoustic_q(self.acoustic_in(h), mask)
        m = mask.unsqueeze(1).to(h.dtype)
        return Factorised(
            z_prosody=qp.z * m,
            z_content=qc.z * m,
            z_acoustic=qa.z * m,
            codes=torch.cat([qp.codes, qc.codes, qa.codes], dim=1),
            speaker=self.timbre_encoder(h, mask),
            content_latent=content_latent,
            h=h,
            commit=qp.loss + qc.loss + qa.loss,
            frames=frames,
            mask=mask,
        )

    # -- training ---------------------------------------------------------------------------

    def prepare_training(self, corpus: Corpus) -> None:
        """Recipe hook: check the speaker table fits and load the frozen teacher named by ``cfg.teacher``."""
        if len(corpus.speakers) > self.cfg.num_speakers:
            raise ValueError(
                f"corpus {corpus.root} has {len(corpus.speakers)} speakers but num_speakers={self.cfg.num_speakers}"
            )
        self.attach_teacher(load_teacher(self.cfg.teacher))

    def attach_teacher(self, teacher: SemanticTeacher) -> None:
        """Supervise the content codes with ``teacher``'s units; kept out of ``state_dict``."""
        if teacher.cfg.n_clusters != self.cfg.num_units:
            raise ValueError(f"teacher has {teacher.cfg.n_clusters} units but num_units={self.cfg.num_units}")
        self.__dict__["_teacher"] = teacher.eval().requires_grad_(False)

    def forward(self, wav: Tensor, lengths: Tensor, speakers: Tensor | None = None) -> CodecTrainOutput:
        """Training pass; ``speakers [B]`` (corpus speaker indices) enables the speaker terms."""
        warp = None
        if self.training and self.cfg.content_warp > 0:
            w = self.cfg.content_warp
            warp = torch.exp(torch.empty(wav.shape[0], device=wav.device).uniform_(-w, w))
        f = self.factorise(wav, lengths, warp)
        z_a = f.z_acoustic
        if self.training and self.cfg.acoustic_dropout > 0:
            keep = torch.rand(wav.shape[0], 1, 1, device=wav.device) >= self.cfg.acoustic_dropout
            z_a = z_a * keep
        recon = self.decoder(f.z_prosody + f.z_content + z_a, f.frames, f.speaker)
        losses = {"commit": f.commit}
        if self._teacher is not None and self.cfg.unit_weight > 0:
            target = teacher_targets(self._teacher.to(wav.device), wav, lengths, f.mask.shape[1])
            logits = self.unit_head(f.z_content.transpose(1, 2))  # [B,T,U]
            valid = f.mask & target.mask
            losses["units"] = self.cfg.unit_weight * F.cross_entropy(logits[valid], target.units[valid])
        if warp is not None and self.cfg.content_consistency > 0:
            cos = F.cosine_similarity(f.content_latent, self.content_in(f.h), dim=1)  # [B,T]
            losses["consistency"] = self.cfg.content_consistency * (1 - cos[f.mask]).mean()
        if speakers is not None:
            losses.update(self._speaker_losses(f, speakers))
        return CodecTrainOutput(wav=recon, losses=losses)

    def _speaker_losses(self, f: Factorised, speakers: Tensor) -> dict[str, Tensor]:
        """Timbre classification (+) and gradient-reversed classification of prosody/content (-)."""
        if int(speakers.max()) >= self.cfg.num_speakers or int(speakers.min()) < 0:
            raise ValueError(f"speaker ids {speakers.tolist()} outside [0, num_speakers={self.cfg.num_speakers})")
        s = self.cfg.grl_scale
        adv = sum(
            self._adversary_loss(classifier, grad_reverse(z, s), f.mask, speakers)
            for classifier, z in ((self.content_adversary, f.z_content), (self.prosody_adversary, f.z_prosody))
        )
        spk = F.cross_entropy(self.speaker_head(f.speaker), speakers)
        return {"adversary": self.cfg.adversary_weight * adv, "speaker": self.cfg.speaker_weight * spk}

    def _adversary_loss(self, classifier: nn.Module, z: Tensor, mask: Tensor, speakers: Tensor) -> Tensor:
        """Speaker cross-entropy of ``classifier`` on ``z [B,D,T]``: per valid frame, or on the utterance mean."""
        if not self.cfg.adversary_frames:
            return F.cross_entropy(classifier(masked_mean(z, mask)), speakers)
        logits = classifier(z.transpose(1, 2))  # [B,T,S]
        return F.cross_entropy(logits[mask], speakers[:, None].expand_as(mask)[mask])

    # -- the SpeechTokenizer interface ------------------------------------------------------

    @torch.no_grad()
    def encode(self, wav: Tensor, lengths: Tensor) -> TokenizerOutput:
        f = self.factorise(wav, lengths)
        return TokenizerOutput(codes=f.codes, lengths=f.frames, speaker=f.speaker)

    @torch.no_grad()
    def decode(self, codes: Tensor, lengths: Tensor, speaker: Tensor | None = None) -> DecodedAudio:
        self.check_codes(codes, lengths)
        return self.decode_streams(codes, tuple(range(self.num_streams)), lengths, speaker)

    @torch.no_grad()
    def decode_streams(
        self, codes: Tensor, streams: tuple[int, ...], lengths: Tensor, speaker: Tensor | None
    ) -> DecodedAudio:
        """Decode a subset of the streams: ``codes [B,len(streams),T]`` holds streams ``streams`` in that order.

        Absent groups contribute nothing — e.g. ``streams=(0, 1, 2)`` decodes the study's "prosody +
        2 content" LM output (App. E.2) with the timbre vector standing in for the acoustic codes.
        Within a residual group the present levels must be its first ones (coarse to fine).
        """
        if len(set(streams)) != len(streams) or not set(streams) <= set(range(self.num_streams)) or not streams:
            raise ValueError(f"streams {streams} must be distinct indices in [0, {self.num_streams})")
        if codes.dim() != 3 or codes.shape[1] != len(streams):
            raise ValueError(f"codes must be [B, {len(streams)}, T] for streams {streams}, got {tuple(codes.shape)}")
        full = codes.new_zeros(codes.shape[0], self.num_streams, codes.shape[2]).long()
        full[:, list(streams)] = codes.long()
        self.check_codes(full, lengths)
        self.check_speaker(speaker, codes.shape[0])
        z = sum(self._group_latent(full, set(streams), kind) for kind in (PROSODY, CONTENT, ACOUSTIC))
        wav = self.decoder(z, lengths, speaker)
        return DecodedAudio(wav=wav, lengths=self.num_samples(lengths))

    def _group_latent(self, full: Tensor, present: set[int], kind: str) -> Tensor:
        """Latent ``[B,D,T]`` of one stream group from ``full [B,6,T]``, using only its ``present`` levels."""
        idx = self.stream_indices(kind)
        have = [k for k in idx if k in present]
        if not have:
            return full.new_zeros(full.shape[0], self.cfg.latent_dim, full.shape[2], dtype=torch.float32)
        if have != list(idx[: len(have)]):
            raise ValueError(f"{kind} levels {have} are not a prefix of {list(idx)}: residual levels refine earlier ones")
        quantizer = {PROSODY: self.prosody_q, CONTENT: self.content_q, ACOUSTIC: self.acoustic_q}[kind]
        return quantizer.decode(full[:, have])
