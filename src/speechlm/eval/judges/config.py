"""Which judges an evaluation uses: one frozen config (YAML maps 1:1) and one builder.

``configs/eval/judges.yaml`` is the offline default; swap in the study's judges with e.g.
``asr.kind=whisper asr.path=/models/whisper-large-v3 speaker.kind=wavlm speaker.path=...``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from speechlm.eval.judges.asr import AsrJudge, PocketsphinxConfig, PocketsphinxJudge, WhisperJudge
from speechlm.eval.judges.quality import DnsmosJudge, DnsmosOutput, QualityJudge, UtmosJudge
from speechlm.eval.judges.speaker import ResemblyzerJudge, SpeakerJudge, WavLMJudge


def _needs_path(section: str, kind: str, path: str | None, local: tuple[str, ...]) -> None:
    if kind in local and not path:
        raise ValueError(f"{section}.kind={kind} loads a local checkpoint: set {section}.path")


@dataclass(frozen=True)
class AsrConfig:
    kind: Literal["pocketsphinx", "whisper", "none"] = "pocketsphinx"
    path: str | None = None  # whisper: a save_pretrained directory
    pocketsphinx: PocketsphinxConfig = field(default_factory=PocketsphinxConfig)

    def __post_init__(self) -> None:
        _needs_path("asr", self.kind, self.path, ("whisper",))


@dataclass(frozen=True)
class SpeakerConfig:
    kind: Literal["resemblyzer", "wavlm", "none"] = "resemblyzer"
    path: str | None = None  # wavlm: a WavLMForXVector save_pretrained directory

    def __post_init__(self) -> None:
        _needs_path("speaker", self.kind, self.path, ("wavlm",))


@dataclass(frozen=True)
class QualityConfig:
    kind: Literal["dnsmos", "utmos", "none"] = "dnsmos"
    path: str | None = None  # utmos: a TorchScript file (see UtmosJudge)
    dnsmos_output: DnsmosOutput = "p808"

    def __post_init__(self) -> None:
        _needs_path("quality", self.kind, self.path, ("utmos",))


@dataclass(frozen=True)
class JudgesConfig:
    asr: AsrConfig = field(default_factory=AsrConfig)
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    device: str = "cpu"  # for the torch judges (Whisper, WavLM, UTMOS, resemblyzer)


@dataclass(frozen=True)
class Judges:
    """The built judges; a judge switched off (``kind: none``) is None and its figures are null."""

    asr: AsrJudge | None
    speaker: SpeakerJudge | None
    quality: QualityJudge | None

    def names(self) -> dict[str, str | None]:
        return {
            "asr_judge": self.asr.name if self.asr else None,
            "sim_judge": self.speaker.name if self.speaker else None,
            "mos_judge": self.quality.name if self.quality else None,
        }


def build_asr(
    cfg: AsrConfig, corpus_dir: str | Path | None, device: str = "cpu", lm_exclude: Collection[str] = ()
) -> AsrJudge | None:
    """The ASR judge ``cfg`` asks for; ``lm_exclude``: sentences kept out of pocketsphinx's domain LM."""
    if cfg.kind == "none":
        return None
    if cfg.kind == "whisper":
        return WhisperJudge(cfg.path, device=device)
    return PocketsphinxJudge(cfg.pocketsphinx, corpus_dir, lm_exclude=lm_exclude)


def build_judges(
    cfg: JudgesConfig = JudgesConfig(), corpus_dir: str | Path | None = None, lm_exclude: Collection[str] = ()
) -> Judges:
    """Build every judge ``cfg`` asks for (the domain LM comes from ``corpus_dir``, minus ``lm_exclude``)."""
    speaker = {
        "resemblyzer": lambda: ResemblyzerJudge(device=cfg.device),
        "wavlm": lambda: WavLMJudge(cfg.speaker.path, device=cfg.device),
        "none": lambda: None,
    }[cfg.speaker.kind]()
    quality = {
        "dnsmos": lambda: DnsmosJudge(cfg.quality.dnsmos_output),
        "utmos": lambda: UtmosJudge(cfg.quality.path, device=cfg.device),
        "none": lambda: None,
    }[cfg.quality.kind]()
    return Judges(asr=build_asr(cfg.asr, corpus_dir, cfg.device, lm_exclude), speaker=speaker, quality=quality)
