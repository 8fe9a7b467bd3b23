"""HuBERT-style semantic teacher: k-means units on MFCCs, then masked prediction of those units.

The semi-decoupled codec distils its first RVQ level towards this model's features (SpeechTokenizer,
Zhang et al. 2024, §3.2 uses HuBERT layer 9) and the decoupled codec supervises its content streams
with its units (FACodec's content supervision; study §2.1 / App. B). No pretrained HuBERT is
reachable offline, so the teacher is trained here on the corpus, following HuBERT (Hsu et al. 2021):

- iteration 1 targets: k-means clusters of 39-d MFCCs (13 + Δ + ΔΔ), HuBERT §III-B;
- masked prediction: span masks (p = 8 %, span 10, HuBERT §IV-C) over the input frames; the loss
  is cross-entropy over masked frames only, with logits = cos(A·o_t, e_c) / τ (HuBERT eq. 2-3);
- iteration 2 targets: k-means of the iteration-1 model's intermediate layer (HuBERT §III-C);
- after training, one more k-means of ``features()`` gives the discrete ``units()``.

Inputs are log-mel frames at 50 Hz (the codecs' framing, so MFCC frame t, model frame t and a 50 Hz
codec's frame t cover the same samples). :mod:`speechlm.tokenizers.teacher_train` holds the recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from speechlm import config as config_io
from speechlm.tokenizers.base import frame_mask
from speechlm.tokenizers.modules import LogMel, MelConfig

# Frames: the teacher shares the codecs' log-mel framing (modules.LogMel): an item of n samples has
# ceil(n / hop) frames, frame t centred on samples [t*hop, (t+1)*hop).


@dataclass(frozen=True)
class TeacherConfig:
    """Architecture of the teacher. Defaults are a small model that trains in minutes on a CPU."""

    sample_rate: int = 16000
    frame_rate: float = 50.0  # HuBERT's 20 ms frames
    mel: MelConfig = field(default_factory=lambda: MelConfig(n_mels=40, n_fft=512))
    n_mfcc: int = 13  # iteration-1 targets: 13 MFCCs + Δ + ΔΔ (HuBERT §III-B)
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 384
    pos_conv_kernel: int = 15  # convolutional relative position embedding (wav2vec 2.0 / HuBERT)
    feature_layer: int = 2  # layer served by features(); ~3/4 depth, like HuBERT L9 of 12
    n_clusters: int = 50  # k-means targets and units (HuBERT: 100 on MFCC, 500 later)
    proj_dim: int = 64  # width of A·o_t and e_c (HuBERT eq. 3)
    temperature: float = 0.1  # τ of the cosine logits (HuBERT eq. 3)
    mask_prob: float = 0.08  # fraction of frames that start a masked span (HuBERT §IV-C)
    mask_length: int = 10
    dropout: float = 0.1

    def __post_init__(self) -> None:
        hop = self.sample_rate / self.frame_rate
        if self.frame_rate <= 0 or abs(hop - round(hop)) > 1e-6:
            raise ValueError(f"sample_rate {self.sample_rate} / frame_rate {self.frame_rate} = {hop} is not a whole hop")
        if not 1 <= self.feature_layer <= self.num_layers:
            raise ValueError(f"feature_layer={self.feature_layer} must be in [1, num_layers={self.num_layers}]")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if not 0 < self.n_mfcc <= self.mel.n_mels:
            raise ValueError(f"n_mfcc={self.n_mfcc} must be in [1, mel.n_mels={self.mel.n_mels}]")
        if self.n_clusters < 2:
            raise ValueError(f"n_clusters={self.n_clusters} must be >= 2")
        if not 0.0 < self.mask_prob < 1.0 or self.mask_length < 1:
            raise ValueError(f"mask_prob={self.mask_prob} must be in (0, 1) and mask_length >= 1")

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate / self.frame_rate))


def num_frames(lengths: Tensor, hop_length: int) -> Tensor:
    """Frames for ``lengths`` samples: ceil(n / hop), the codecs' convention (tokenizers.base)."""
    return torch.div(lengths + hop_length - 1, hop_length, rounding_mode="floor")


def mfcc_from_logmel(logmel: Tensor, n_mfcc: int, delta_width: int = 2) -> Tensor:
    """``logmel [B,M,T]`` -> MFCC + Δ + ΔΔ ``[B,T,3*n_mfcc]`` (orthonormal DCT-II; regression deltas ±2)."""
    m = logmel.shape[1]
    n = torch.arange(m, dtype=torch.float64, device=logmel.device)
    k = torch.arange(n_mfcc, dtype=torch.float64, device=logmel.device)[:, None]
    dct = torch.cos(math.pi / m * (n + 0.5) * k) * math.sqrt(2.0 / m)
    dct[0] /= math.sqrt(2.0)
    mfcc = dct.to(logmel.dtype) @ logmel  # [B,C,T]

    def deltas(x: Tensor) -> Tensor:
        pad = F.pad(x, (delta_width, delta_width), mode="replicate")
        w = torch.arange(-delta_width, delta_width + 1, dtype=x.dtype, device=x.device)
        w = w / (2 * sum(i * i for i in range(1, delta_width + 1)))
        return F.conv1d(pad, w.expand(x.shape[1], 1, -1), groups=x.shape[1])  # cross-correlation: Σ_i i·x[t+i]

    d1 = deltas(mfcc)
    return torch.cat([mfcc, d1, deltas(d1)], dim=1).transpose(1, 2)


class KMeansCodebook(nn.Module):
    """Standardise-then-nearest-centroid quantiser; ``fit`` is seeded k-means++ + Lloyd (deterministic)."""

    def __init__(self, n_clusters: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("centroids", torch.zeros(n_clusters, dim))  # [C,D] in standardised space

    @torch.no_grad()
    def fit(self, x: Tensor, iters: int = 30, seed: int = 0) -> KMeansCodebook:
        """Fit on ``x [N,D]`` frames in place; returns self."""
        k = self.centroids.shape[0]
        if x.ndim != 2 or x.shape[1] != self.centroids.shape[1]:
            raise ValueError(f"k-means expects [N,{self.centroids.shape[1]}] frames, got {tuple(x.shape)}")
        if x.shape[0] < k:
            raise ValueError(f"k-means needs at least n_clusters={k} frames, got {x.shape[0]}")
        x = x.float()
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp(min=1e-5))
        z = (x - self.mean) / self.std
        gen = torch.Generator().manual_seed(seed)
        # k-means++: each new centre is drawn with probability ∝ squared distance to the nearest one.
        centres = z[torch.randint(len(z), (1,), generator=gen)]
        d2 = torch.cdist(z, centres).squeeze(1).pow(2)
        for _ in range(1, k):
            nxt = z[torch.multinomial(d2 / d2.sum(), 1, generator=gen)]
            centres = torch.cat([centres, nxt])
            d2 = torch.minimum(d2, torch.cdist(z, nxt).squeeze(1).pow(2))
        for _ in range(iters):
            assign = torch.cdist(z, centres).argmin(1)
            counts = torch.bincount(assign, minlength=k).unsqueeze(1)
            sums = torch.zeros_like(centres).index_add_(0, assign, z)
            centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)  # empty cluster: keep
        self.centroids.copy_(centres)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """``x [...,D]`` -> cluster ids ``[...]``."""
        z = (x.float() - self.mean) / self.std
        flat = z.reshape(-1, z.shape[-1])
        return torch.cdist(flat, self.centroids).argmin(-1).reshape(z.shape[:-1])


def span_mask(frame_lengths: Tensor, max_frames: int, prob: float, span: int, generator: torch.Generator) -> Tensor:
    """HuBERT/wav2vec 2.0 span masking: ``prob`` of each sequence's frames start a ``span`` -> BoolTensor [B,T]."""
    mask = torch.zeros(len(frame_lengths), max_frames, dtype=torch.bool)
    for b, length in enumerate(frame_lengths.tolist()):
        n_starts = max(1, int(prob * length + torch.rand((), generator=generator)))
        candidates = max(1, length - span + 1)
        starts = torch.randperm(candidates, generator=generator)[:n_starts]
        idx = (starts[:, None] + torch.arange(span)[None]).clamp(max=max(length - 1, 0)).flatten()
        mask[b, idx] = True
    return mask


class SemanticTeacher(nn.Module):
    """Small HuBERT on log-mel frames: ``features(wav, lengths) -> [B,T,D]``, ``units(...) -> [B,T]``.

    HuBERT's waveform CNN is replaced by a log-mel front end (as in MelHuBERT, Lin et al. 2023):
    the CNN dominated the cost on a shared CPU and the masked-prediction objective is unchanged.
    """

    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.mel = LogMel(cfg.mel, cfg.sample_rate, cfg.hop_length)
        self.input_norm = nn.LayerNorm(cfg.mel.n_mels)
        self.input_proj = nn.Linear(cfg.mel.n_mels, d)
        self.mask_embedding = nn.Parameter(torch.randn(d) * 0.02)  # replaces masked frames (HuBERT §II-B)
        self.pos_conv = nn.Conv1d(d, d, cfg.pos_conv_kernel, padding=cfg.pos_conv_kernel // 2, groups=max(1, d // 16))
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d, cfg.num_heads, cfg.intermediate_size, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(cfg.num_layers)
        )
        self.final_norm = nn.LayerNorm(d)
        self.final_proj = nn.Linear(d, cfg.proj_dim)  # A in HuBERT eq. 3
        self.label_embeddings = nn.Parameter(torch.randn(cfg.n_clusters, cfg.proj_dim))  # e_c
        self.unit_codebook = KMeansCodebook(cfg.n_clusters, d)

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Valid frames per item for ``lengths`` samples."""
        return num_frames(lengths, self.cfg.hop_length)

    def logmel(self, wav: Tensor, lengths: Tensor) -> Tensor:
        """``wav [B,N]`` -> log-mel ``[B,M,T]`` with padding frames set to the floor value."""
        if wav.ndim != 2 or lengths.shape != wav.shape[:1]:
            raise ValueError(f"expected wav [B,N] with lengths [B], got {tuple(wav.shape)} and {tuple(lengths.shape)}")
        if int(lengths.min()) < 1:
            raise ValueError(f"empty audio in batch: lengths {lengths.tolist()}")
        mel = self.mel(wav)
        valid = frame_mask(self.frame_lengths(lengths), mel.shape[-1]).unsqueeze(1)
        return mel.masked_fill(~valid, math.log(1e-5))

    def _hidden(self, wav: Tensor, lengths: Tensor, mask: Tensor | None) -> list[Tensor]:
        """Outputs of every transformer layer ``[B,T,D]``; ``mask [B,T]`` marks frames to hide."""
        x = self.input_proj(self.input_norm(self.logmel(wav, lengths).transpose(1, 2)))
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)
        pad = ~frame_mask(self.frame_lengths(lengths), x.shape[1])
        x = x + F.gelu(self.pos_conv(x.masked_fill(pad.unsqueeze(-1), 0.0).transpose(1, 2))).transpose(1, 2)
        x = self.dropout(x)
        hidden = []
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
            hidden.append(x)
        hidden[-1] = self.final_norm(hidden[-1])
        return hidden

    def features(self, wav: Tensor, lengths: Tensor) -> Tensor:
        """Layer ``cfg.feature_layer`` (1-based) of ``wav [B,N]`` -> [B,T,D]; frames past ``frame_lengths`` are padding."""
        return self._hidden(wav, lengths, None)[self.cfg.feature_layer - 1]

    def units(self, wav: Tensor, lengths: Tensor) -> Tensor:
        """Discrete units [B,T] in [0, n_clusters) from the k-means codebook over ``features``."""
        return self.unit_codebook(self.features(wav, lengths))

    def mfcc_features(self, wav: Tensor, lengths: Tensor) -> Tensor:
        """Iteration-1 inputs to k-means: [B,T,3*n_mfcc], frame-aligned with ``features``."""
        return mfcc_from_logmel(self.logmel(wav, lengths), self.cfg.n_mfcc)

    def masked_prediction_loss(
        self, wav: Tensor, lengths: Tensor, targets: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """HuBERT's L_m: cross-entropy on masked frames. ``targets [B,T]`` (-100 = ignore) -> (loss, accuracy)."""
        frames = self.frame_lengths(lengths)
        t = int(num_frames(torch.tensor(wav.shape[1]), self.cfg.hop_length))
        mask = span_mask(frames, t, self.cfg.mask_prob, self.cfg.mask_length, generator).to(wav.device)
        hidden = self._hidden(wav, lengths, mask)[-1]  # [B,T,D]
        proj = F.normalize(self.final_proj(hidden[mask]), dim=-1)  # [M,P]
        logits = proj @ F.normalize(self.label_embeddings, dim=-1).T / self.cfg.temperature  # [M,C]
        gold = targets[:, :t].to(wav.device)[mask]
        loss = F.cross_entropy(logits, gold, ignore_index=-100)
        valid = gold != -100
        acc = (logits.argmax(-1)[valid] == gold[valid]).float().mean()
        return loss, acc.detach()


def save_teacher(teacher: SemanticTeacher, directory: str | Path) -> Path:
    """Write ``model.safetensors`` + ``config.yaml`` into ``directory`` atomically (temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(tmp))
    tmp.replace(directory / "model.safetensors")
    config_io.dump(teacher.cfg, directory / "config.yaml")
    return directory


def load_teacher(directory: str | Path, device: str | torch.device = "cpu") -> SemanticTeacher:
    """Inverse of :func:`save_teacher`; the teacher comes back frozen in eval mode."""
    directory = Path(directory)
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"no teacher checkpoint at {weights}")
    teacher = SemanticTeacher(config_io.load(TeacherConfig, directory / "config.yaml"))
    teacher.load_state_dict(load_file(str(weights), device="cpu"))
    return teacher.to(device).eval().requires_grad_(False)


@dataclass(frozen=True)
class TeacherTargets:
    """Teacher outputs resampled onto a codec's frame grid (what distillation / unit supervision consume)."""

    features: Tensor  # [B,T,D] float, layer ``feature_layer`` linearly interpolated to T codec frames
    units: Tensor  # [B,T] int64, nearest teacher frame's unit
    mask: Tensor  # [B,T] bool, codec frames covered by a valid teacher frame


@torch.no_grad()
def teacher_targets(teacher: SemanticTeacher, wav: Tensor, lengths: Tensor, frames: int) -> TeacherTargets:
    """Run the frozen teacher on ``wav [B,N]`` and map its 50 Hz frames onto ``frames`` codec frames.

    Both grids span the same padded signal, so frame t of a T-frame grid sits at relative time
    (t + 0.5) / T; linear interpolation (features) and nearest neighbour (units) follow from that.
    """
    feats = teacher.features(wav, lengths)  # [B,Tt,D]
    units = teacher.unit_codebook(feats)  # [B,Tt]
    t_teacher = feats.shape[1]
    resampled = F.interpolate(feats.transpose(1, 2), size=frames, mode="linear", align_corners=False)
    nearest = ((torch.arange(frames, device=wav.device) + 0.5) * t_teacher / frames).long().clamp(max=t_teacher - 1)
    valid = nearest[None] < teacher.frame_lengths(lengths)[:, None]
    return TeacherTargets(features=resampled.transpose(1, 2), units=units[:, nearest], mask=valid)
