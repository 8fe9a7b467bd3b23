"""Quality (MOS) judges: ``score(wav) -> float`` on a 1-5 MOS scale.

The study reports UTMOS (SaruLab's UTMOS22 strong learner, Appendix D). UTMOS weights cannot be
fetched offline, so the default here is **DNSMOS** (Microsoft's DNS-challenge MOS predictor; its
ONNX files ship inside the ``speechmos`` wheel). The two are different instruments trained on
different listening tests: every MOS figure carries its judge's name (``mos_judge``) and a DNSMOS
number must never be reported as UTMOS.

DNSMOS outputs (speechmos 0.0.1.1 ``DNSMOS.__call__``), from two networks:
- ``p808_mos`` — ``model_v8.onnx`` on a log-mel spectrogram: overall quality as rated in an
  ITU-T **P.808** absolute-category-rating test. This is our ``mos``: like UTMOS (trained on
  BVCC's ACR ratings) it predicts one overall opinion score of a clip.
- ``ovrl_mos`` / ``sig_mos`` / ``bak_mos`` — ``sig_bak_ovr.onnx`` on the waveform, mapped through
  fitted polynomials: the **P.835** overall, speech-signal and background-noise scores. They are
  kept alongside (``DnsmosJudge.scores``) and ``output: ovrl`` selects OVRL instead.
Clips shorter than DNSMOS's 9.01 s window are tiled up to it by speechmos (its own behaviour).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Literal

import numpy as np

from speechlm.eval.judges.base import JUDGE_SAMPLE_RATE, prepare_wav

MIN_SECONDS = 0.1
DnsmosOutput = Literal["p808", "ovrl"]


class QualityJudge(abc.ABC):
    """``score(wav [N] float32 @ 16 kHz) -> MOS``; ``name`` goes into every report as ``mos_judge``."""

    name: str
    sample_rate: int = JUDGE_SAMPLE_RATE

    @abc.abstractmethod
    def score(self, wav: np.ndarray) -> float:
        """Predicted MOS (1-5)."""

    @classmethod
    def default(cls) -> QualityJudge:
        return DnsmosJudge()

    @classmethod
    def utmos(cls, path: str | Path, device: str = "cpu") -> QualityJudge:
        return UtmosJudge(path, device=device)


class DnsmosJudge(QualityJudge):
    """DNSMOS from speechmos (ONNX, offline); ~0.3 s per clip on one core."""

    def __init__(self, output: DnsmosOutput = "p808") -> None:
        import speechmos.dnsmos as dnsmos

        if output not in ("p808", "ovrl"):
            raise ValueError(f"DNSMOS output must be 'p808' or 'ovrl', got {output!r}")
        models = Path(dnsmos.__file__).parent / "dnsmos_models"
        self._model = dnsmos.DNSMOS(str(models / "sig_bak_ovr.onnx"), str(models / "model_v8.onnx"))
        self.output = output
        self.name = f"dnsmos-{output}"

    def scores(self, wav: np.ndarray) -> dict[str, float]:
        """All four DNSMOS outputs: ``p808``, ``ovrl``, ``sig``, ``bak``."""
        wav = prepare_wav(wav, self.name, MIN_SECONDS)
        out = self._model(wav, JUDGE_SAMPLE_RATE, False)
        return {key: float(out[f"{key}_mos"]) for key in ("p808", "ovrl", "sig", "bak")}

    def score(self, wav: np.ndarray) -> float:
        return self.scores(wav)[self.output]


class UtmosJudge(QualityJudge):
    """The UTMOS slot: a **TorchScript** file computing ``mos [B] = model(wav [B, N])`` at 16 kHz.

    SaruLab's released UTMOS22 checkpoint is a PyTorch-Lightning ``.ckpt`` that only loads with
    their training code (fairseq wav2vec 2.0 + Lightning module), so there is no standard offline
    format to read it from. To use it, export once where that code runs, e.g.
    ``torch.jit.trace(model, torch.zeros(1, 16000)).save("utmos22_strong.pt")`` for a module whose
    forward takes a 16 kHz waveform batch and returns one MOS per clip, then pass that file here.
    """

    name = "utmos"

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        import torch

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"UTMOS TorchScript file not found: {path}")
        if path.suffix == ".ckpt":
            raise ValueError(
                f"{path} looks like a Lightning checkpoint; the UTMOS judge reads a TorchScript export "
                f"(forward(wav [B, N] @ 16 kHz) -> mos [B]); see UtmosJudge's docstring for how to export one"
            )
        try:
            self.model = torch.jit.load(str(path), map_location=device).eval()
        except RuntimeError as err:
            raise ValueError(f"{path} is not a TorchScript file ({err.__class__.__name__}); see UtmosJudge's docstring") from err
        self.device = torch.device(device)

    def score(self, wav: np.ndarray) -> float:
        import torch

        wav = prepare_wav(wav, self.name, MIN_SECONDS)
        with torch.inference_mode():
            mos = self.model(torch.from_numpy(wav)[None].to(self.device))
        mos = mos.reshape(-1)
        if mos.numel() != 1:
            raise ValueError(f"the UTMOS model returned {mos.numel()} values for one clip; expected one MOS")
        return float(mos[0])
