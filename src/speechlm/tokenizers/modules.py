"""Shared codec blocks: log-mel front end, frame-rate encoder, Vocos-style iSTFT decoder, spectral losses.

Every in-house tokenizer (coupled, semi-decoupled, decoupled) is ``encoder -> quantizer(s) -> decoder``
built from these pieces:

- :class:`LogMel` frames audio so that an item of ``n`` samples yields exactly ``ceil(n / hop)``
  frames (the signal is zero-padded to whole frames, then by ``(n_fft - hop) / 2`` on each side),
  so frame ``t`` is centred on samples ``[t*hop, (t+1)*hop)``;
- :class:`FrameEncoder` (ConvNeXt stack, optional strided patching and transformer layers) maps
  log-mel to latents at the codec frame rate;
- :class:`WaveDecoder` stays at frame rate and ends in :class:`ISTFTHead` (magnitude + phase ->
  inverse STFT), the Vocos design used by WavTokenizer and X-codec2: no transposed-conv upsampling,
  which makes the decoder cheap enough for a laptop CPU. Its ConvNeXt blocks take an optional global
  ``cond [B, Ds]`` through adaptive LayerNorm — how FACodec injects the timbre vector (study App. B);
- :class:`SpectralLoss`: multi-resolution STFT (spectral convergence + log magnitude) and log-mel L1,
  the reconstruction terms of SoundStream / EnCodec / Vocos.

Padding discipline: every block zeroes positions past the valid length (masks are ``[B, 1, T]``),
so a batch gives the same result for each item as that item alone — the conformance test checks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from speechlm.tokenizers.base import frame_mask


@dataclass(frozen=True)
class MelConfig:
    n_mels: int = 80
    n_fft: int = 1024  # analysis window (samples); must be >= the mel hop
    f_min: float = 0.0  # Hz
    f_max: float | None = None  # Hz; None = Nyquist

    def __post_init__(self) -> None:
        if self.n_mels < 1 or self.n_fft < 16:
            raise ValueError(f"mel: n_mels={self.n_mels} and n_fft={self.n_fft} must be positive (n_fft >= 16)")


@dataclass(frozen=True)
class EncoderConfig:
    dim: int = 256
    intermediate_dim: int = 768
    layers: int = 4  # ConvNeXt blocks after patching (at frame rate)
    kernel_size: int = 7
    downsample: int = 2  # the mel runs at downsample x frame rate and is patched down (keeps sub-frame timing)
    transformer_layers: int = 0  # optional self-attention layers on top (X-codec2/StableCodec-style)
    heads: int = 4

    def __post_init__(self) -> None:
        if self.downsample < 1 or self.layers < 0 or self.transformer_layers < 0:
            raise ValueError(f"encoder: downsample={self.downsample}, layers={self.layers} must be >= 1 / >= 0")
        if self.transformer_layers and self.dim % self.heads:
            raise ValueError(f"encoder: dim={self.dim} is not divisible by heads={self.heads}")


@dataclass(frozen=True)
class DecoderConfig:
    dim: int = 384
    intermediate_dim: int = 1152
    layers: int = 8
    kernel_size: int = 7
    n_fft_factor: int = 4  # iSTFT window = factor x hop (Vocos: 4)

    def __post_init__(self) -> None:
        if self.layers < 1 or self.n_fft_factor < 1:
            raise ValueError(f"decoder: layers={self.layers} and n_fft_factor={self.n_fft_factor} must be >= 1")


# --------------------------------------------------------------------------------------- front end


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """Triangular HTK-scale filters ``[n_mels, n_fft//2 + 1]``, area-normalised (Slaney norm)."""

    def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(hz_to_mel(torch.tensor(f_min)), hz_to_mel(torch.tensor(f_max)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (freqs[None] - lower) / (centre - lower)
    fall = (upper - freqs[None]) / (upper - centre)
    fb = torch.clamp(torch.minimum(rise, fall), min=0.0)
    fb = fb * (2.0 / (upper - lower))
    return fb.float()


def frame_signal_padding(num_samples: int, hop: int, n_fft: int) -> tuple[int, int]:
    """(left, right) zero padding that makes ``ceil(n / hop)`` centred frames of ``n_fft`` samples."""
    frames = math.ceil(num_samples / hop)
    left = (n_fft - hop) // 2
    right = frames * hop - num_samples + (n_fft - hop - left)
    return left, right


class LogMel(nn.Module):
    """``wav [B, N]`` -> log-mel ``[B, n_mels, ceil(N / hop)]``."""

    def __init__(self, cfg: MelConfig, sample_rate: int, hop_length: int) -> None:
        super().__init__()
        if cfg.n_fft < hop_length:
            raise ValueError(f"mel: n_fft={cfg.n_fft} must be >= hop={hop_length} so that frames cover the signal")
        self.hop_length, self.n_fft = hop_length, cfg.n_fft
        f_max = cfg.f_max if cfg.f_max is not None else sample_rate / 2
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        fb = mel_filterbank(sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, f_max)
        self.register_buffer("filters", fb, persistent=False)

    def forward(self, wav: torch.Tensor, warp: torch.Tensor | None = None) -> torch.Tensor:
        """``warp [B]`` (optional) scales every frequency of item b by ``warp[b]`` before the mel filters."""
        left, right = frame_signal_padding(wav.shape[-1], self.hop_length, self.n_fft)
        padded = F.pad(wav, (left, right))
        spec = torch.stft(
            padded, self.n_fft, self.hop_length, window=self.window, center=False, return_complex=True
        )
        power = spec.abs().pow(2)
        if warp is not None:
            power = warp_frequencies(power, warp)
        mel = torch.matmul(self.filters, power)
        return torch.log(mel.clamp(min=1e-5))


def warp_frequencies(power: torch.Tensor, warp: torch.Tensor) -> torch.Tensor:
    """``power [B,F,T]`` -> the spectrum with every frequency scaled by ``warp [B]``: ``S'(f) = S(f / warp)``.

    Vocal tract length perturbation (Jaitly & Hinton 2013): pitch and formants move together, timing
    stays. Linear interpolation between bins; bins whose source lies above Nyquist are zero.
    """
    if warp.shape != (power.shape[0],) or bool((warp <= 0).any()):
        raise ValueError(f"warp must be [B={power.shape[0]}] positive factors, got {tuple(warp.shape)}")
    bins = power.shape[1]
    source = torch.arange(bins, device=power.device, dtype=power.dtype)[None] / warp[:, None].to(power.dtype)  # [B,F]
    lo = source.floor().clamp(max=bins - 1).long()
    hi = (lo + 1).clamp(max=bins - 1)
    frac = (source - lo).unsqueeze(-1)
    below = power.gather(1, lo[..., None].expand_as(power))
    above = power.gather(1, hi[..., None].expand_as(power))
    warped = below * (1 - frac) + above * frac
    return warped * (source <= bins - 1).unsqueeze(-1)


# --------------------------------------------------------------------------------------- blocks


class AdaLayerNorm(nn.Module):
    """LayerNorm over channels whose scale/shift come from a global ``cond [B, Ds]`` when given.

    Initialised to the identity modulation (scale 1, shift 0) so a decoder trained without a
    condition behaves like plain LayerNorm.
    """

    def __init__(self, dim: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=cond_dim == 0)
        self.modulation = nn.Linear(cond_dim, 2 * dim) if cond_dim else None
        if self.modulation is not None:
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, T, D]``, ``cond [B, Ds]``."""
        x = self.norm(x)
        if self.modulation is None:
            return x
        if cond is None:
            raise ValueError("this block was built with a condition (cond_dim > 0) but got cond=None")
        scale, shift = self.modulation(cond).unsqueeze(1).chunk(2, dim=-1)
        return x * (1.0 + scale) + shift


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> (Ada)LayerNorm -> pointwise MLP -> layer scale -> residual (ConvNeXt/Vocos)."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = AdaLayerNorm(dim, cond_dim)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1.0 / 8))  # small layer scale: stable early training

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, D, T]``, ``mask [B, 1, T]`` -> ``[B, D, T]`` (zero past the mask)."""
        h = self.dwconv(x * mask).transpose(1, 2)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h, cond))))
        return (x + (self.gamma * h).transpose(1, 2)) * mask


class FrameEncoder(nn.Module):
    """``wav [B, N]`` -> latents ``[B, out_dim, T]`` at the codec frame rate, zero past ``frames``."""

    def __init__(
        self, mel: MelConfig, cfg: EncoderConfig, sample_rate: int, hop_length: int, out_dim: int
    ) -> None:
        super().__init__()
        if hop_length % cfg.downsample:
            raise ValueError(f"encoder: hop {hop_length} is not divisible by downsample={cfg.downsample}")
        self.downsample = cfg.downsample
        self.mel = LogMel(mel, sample_rate, hop_length // cfg.downsample)
        self.stem = nn.Conv1d(mel.n_mels, cfg.dim, cfg.kernel_size, padding=cfg.kernel_size // 2)
        self.patch = nn.Conv1d(cfg.dim, cfg.dim, cfg.downsample, stride=cfg.downsample)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.intermediate_dim, cfg.kernel_size) for _ in range(cfg.layers)
        )
        layer = nn.TransformerEncoderLayer(
            cfg.dim, cfg.heads, cfg.intermediate_dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.attention = (
            nn.TransformerEncoder(layer, cfg.transformer_layers, enable_nested_tensor=False)
            if cfg.transformer_layers
            else None
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.proj = nn.Linear(cfg.dim, out_dim)

    def forward(self, wav: torch.Tensor, frames: torch.Tensor, warp: torch.Tensor | None = None) -> torch.Tensor:
        """``wav [B, N]``, valid ``frames [B]`` -> ``[B, out_dim, T]``; ``warp [B]``: see :class:`LogMel`."""
        hop = self.mel.hop_length * self.downsample
        T = math.ceil(wav.shape[-1] / hop)
        mel = self.mel(F.pad(wav, (0, T * hop - wav.shape[-1])), warp)  # [B, n_mels, T * downsample]
        fine = frame_mask(frames * self.downsample, mel.shape[-1]).unsqueeze(1).float()
        mask = frame_mask(frames, T).unsqueeze(1).float()
        x = self.stem(mel * fine) * fine
        x = self.patch(x) * mask
        for block in self.blocks:
            x = block(x, mask)
        h = x.transpose(1, 2)
        if self.attention is not None:
            h = self.attention(h, src_key_padding_mask=~mask[:, 0].bool())
        return (self.proj(self.norm(h)).transpose(1, 2)) * mask


class ISTFTHead(nn.Module):
    """``[B, T, D]`` -> waveform ``[B, T * hop]`` via predicted log-magnitude and phase (Vocos §3).

    Overlap-add normalises by the window envelope of frames ``0 ... inf``: padding frames beyond an
    item's end are zero and must not change its samples, so per-item and batched output agree.
    """

    def __init__(self, dim: int, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.proj = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``h [B, T, D]``, ``mask [B, 1, T]`` -> ``[B, T * hop]``; frames past the mask are silent."""
        log_mag, phase = self.proj(h).transpose(1, 2).chunk(2, dim=1)  # [B, n_fft/2+1, T] each
        mag = torch.exp(log_mag).clamp(max=1e2) * mask  # clamp: exp overflow early in training
        spec = torch.polar(mag, phase)
        return self.overlap_add(torch.fft.irfft(spec, n=self.n_fft, dim=1))

    def overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, n_fft, T]`` time-domain frames -> ``[B, T * hop]``."""
        T, n_fft, hop = frames.shape[-1], self.n_fft, self.hop_length
        out_len = (T - 1) * hop + n_fft
        fold = dict(output_size=(1, out_len), kernel_size=(1, n_fft), stride=(1, hop))
        y = F.fold(frames * self.window[None, :, None], **fold)[:, 0, 0]
        extra = math.ceil(n_fft / hop)
        sq = self.window.square()[None, :, None].expand(1, n_fft, T + extra)
        env = F.fold(sq, **{**fold, "output_size": (1, (T + extra - 1) * hop + n_fft)})[0, 0, 0, :out_len]
        pad = (n_fft - hop) // 2
        return (y / env.clamp(min=1e-8))[:, pad : pad + T * hop]


class WaveDecoder(nn.Module):
    """Latents ``[B, in_dim, T]`` (+ optional ``cond [B, Ds]``) -> ``wav [B, T * hop]``."""

    def __init__(self, cfg: DecoderConfig, in_dim: int, hop_length: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.stem = nn.Conv1d(in_dim, cfg.dim, cfg.kernel_size, padding=cfg.kernel_size // 2)
        self.norm_in = AdaLayerNorm(cfg.dim, cond_dim)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.intermediate_dim, cfg.kernel_size, cond_dim) for _ in range(cfg.layers)
        )
        self.norm_out = nn.LayerNorm(cfg.dim)
        self.head = ISTFTHead(cfg.dim, cfg.n_fft_factor * hop_length, hop_length)

    def forward(self, z: torch.Tensor, frames: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``z [B, in_dim, T]``, valid ``frames [B]`` -> ``wav [B, T * hop]`` (zero past each item)."""
        mask = frame_mask(frames, z.shape[-1]).unsqueeze(1).float()
        x = self.stem(z * mask)
        x = self.norm_in(x.transpose(1, 2), cond).transpose(1, 2) * mask
        for block in self.blocks:
            x = block(x, mask, cond)
        wav = self.head(self.norm_out(x.transpose(1, 2)), mask)
        return wav * frame_mask(frames * self.hop_length, wav.shape[-1]).float()


# --------------------------------------------------------------------------------------- losses


@dataclass(frozen=True)
class SpectralLossConfig:
    stft_ffts: tuple[int, ...] = (256, 512, 1024, 2048)  # hop = n_fft / 4 each
    stft_weight: float = 1.0
    mel_n_fft: int = 1024
    mel_hop: int = 256
    mel_bins: int = 80
    mel_weight: float = 15.0  # log-mel L1 dominates, as in Vocos/DAC recipes


class SpectralLoss(nn.Module):
    """Multi-resolution STFT loss + log-mel L1 between ``pred`` and ``target`` waveforms ``[B, N]``."""

    def __init__(self, cfg: SpectralLossConfig, sample_rate: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.mel = LogMel(MelConfig(n_mels=cfg.mel_bins, n_fft=cfg.mel_n_fft), sample_rate, cfg.mel_hop)
        for n_fft in cfg.stft_ffts:
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def _magnitude(self, wav: torch.Tensor, n_fft: int) -> torch.Tensor:
        window = getattr(self, f"window_{n_fft}")
        spec = torch.stft(wav, n_fft, n_fft // 4, window=window, return_complex=True)
        return spec.abs().clamp(min=1e-5)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pred``, ``target`` ``[B, N]`` -> weighted ``{"stft", "mel"}`` scalars."""
        if pred.shape != target.shape:
            raise ValueError(f"spectral loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        sc, mag = pred.new_zeros(()), pred.new_zeros(())
        for n_fft in self.cfg.stft_ffts:
            p, t = self._magnitude(pred, n_fft), self._magnitude(target, n_fft)
            sc = sc + torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp(min=1e-5)
            mag = mag + F.l1_loss(p.log(), t.log())
        n = len(self.cfg.stft_ffts)
        stft = (sc + mag) / n
        mel = F.l1_loss(self.mel(pred), self.mel(target))
        return {"stft": self.cfg.stft_weight * stft, "mel": self.cfg.mel_weight * mel}
