"""Offline speakers for the built-in corpus: flite, festival and espeak-ng behind one call.

Each :class:`VoiceSpec` is one corpus speaker: an engine voice plus optional prosody settings
(flite's ``int_f0_target_mean``/``duration_stretch``, espeak's pitch/speed) that derive distinct
speakers from the few real voices (DESIGN.md §5; OFFLINE.md "Speech synthesis").
:func:`synthesize` turns ``(text, wav path)`` items into 16 kHz mono PCM16 files and returns
their lengths; it is a plain function of picklable arguments so a process pool can run it.
Every engine is deterministic, so the same text and voice give byte-identical audio.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from speechlm.audio import load_audio, peak_normalize, resample, save_audio
from speechlm.config import from_dict

SAMPLE_RATE = 16_000  # Hz; the corpus rate (study App. G.1: "all speeches are resampled to 16 kHz")
PEAK = 0.9  # common peak level, so loudness does not tell the speakers apart
TRIM_DB = 40.0  # trim edge silence quieter than peak - 40 dB ...
KEEP_SILENCE = 0.1  # ... but keep 0.1 s of it at each end (seconds)

Engine = Literal["flite", "festival", "espeak"]
_BINARIES: dict[str, str] = {"flite": "flite", "festival": "festival", "espeak": "espeak-ng"}
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")  # `flite -lv`, less awb_time (speaks only times)
_APT = "apt-get install -y flite festival festvox-kdlpc16k espeak-ng"


@dataclass(frozen=True)
class VoiceSpec:
    name: str  # corpus speaker name
    engine: Engine
    voice: str  # flite: kal16|awb|rms|slt; festival: ked_diphone; espeak: e.g. en-us+m3
    gender: Literal["male", "female"]
    seen: bool = True  # False: test split only (study §4.3 unseen speakers)
    f0_mean: float | None = None  # flite int_f0_target_mean, Hz
    stretch: float | None = None  # flite duration_stretch (>1 = slower)
    warp: float | None = None  # flite: scale every frequency (pitch *and* formants) by this, tempo kept
    pitch: int | None = None  # espeak -p, 0..99
    speed: int | None = None  # espeak -s, words per minute

    def __post_init__(self) -> None:
        if self.engine == "festival" and not re.fullmatch(r"[a-z0-9_]+", self.voice):
            # The name is spliced into a Scheme expression, `(voice_NAME)`.
            raise ValueError(f"speaker {self.name!r}: festival voice {self.voice!r} is not a plain voice name")
        if self.engine == "flite" and self.voice not in FLITE_VOICES:
            # flite silently falls back to its default voice for an unknown name.
            raise ValueError(f"speaker {self.name!r}: flite voice {self.voice!r} is not one of {FLITE_VOICES}")
        if self.engine != "flite" and any(v is not None for v in (self.f0_mean, self.stretch, self.warp)):
            raise ValueError(f"speaker {self.name!r}: f0_mean/stretch/warp are flite settings, not {self.engine}")
        if self.warp is not None and not 0.7 <= self.warp <= 1.4:
            raise ValueError(f"speaker {self.name!r}: warp {self.warp} is outside [0.7, 1.4]")
        if self.engine != "espeak" and (self.pitch is not None or self.speed is not None):
            raise ValueError(f"speaker {self.name!r}: pitch/speed are espeak settings, not {self.engine}")
        if self.pitch is not None and not 0 <= self.pitch <= 99:
            raise ValueError(f"speaker {self.name!r}: espeak pitch {self.pitch} is outside 0..99")

    @property
    def voice_id(self) -> str:
        """The engine voice plus its settings, as recorded in corpus.json."""
        settings = {"f0": self.f0_mean, "stretch": self.stretch, "warp": self.warp, "p": self.pitch, "s": self.speed}
        extra = [f"{k}={v}" for k, v in settings.items() if v is not None]
        return " ".join([self.voice, *extra])


@dataclass(frozen=True)
class RoleSpec:
    name: str  # persona name
    speaker: str  # a VoiceSpec name
    seen: bool = True  # False: QA test split only (study §3.1 unseen roles)


@dataclass(frozen=True)
class VoiceTable:
    speakers: tuple[VoiceSpec, ...]
    roles: tuple[RoleSpec, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [s.name for s in self.speakers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate speaker names in {names}")
        by_name = {s.name: s for s in self.speakers}
        for role in self.roles:
            if role.speaker not in by_name:
                raise ValueError(f"role {role.name!r}: unknown speaker {role.speaker!r} (known: {names})")
            if role.seen != by_name[role.speaker].seen:
                # An unseen role spoken by a seen voice would leak its timbre into training.
                raise ValueError(f"role {role.name!r} has seen={role.seen} but its speaker does not")
        if sum(not s.seen for s in self.speakers) < 2:
            raise ValueError("need at least 2 unseen speakers for the unseen-speaker SIM (study §4.3)")

    def speaker(self, name: str) -> VoiceSpec:
        for s in self.speakers:
            if s.name == name:
                return s
        raise ValueError(f"unknown speaker {name!r}")


def load_voice_table(path: str | Path | None = None) -> VoiceTable:
    """The voice table from YAML (default: the packaged ``resources/voices.yaml``)."""
    if path is None:
        text = resources.files("speechlm.data").joinpath("resources/voices.yaml").read_text()
        source = "speechlm/data/resources/voices.yaml"
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"voice table not found: {path}")
        text, source = path.read_text(), str(path)
    return from_dict(VoiceTable, yaml.safe_load(text), source=source)


def check_engines(voices: tuple[VoiceSpec, ...] | list[VoiceSpec]) -> None:
    """Fail early, naming the missing program, rather than midway through a pool of jobs."""
    for engine in sorted({v.engine for v in voices}):
        if shutil.which(_BINARIES[engine]) is None:
            raise FileNotFoundError(f"speech engine '{_BINARIES[engine]}' not found on PATH (install: {_APT})")


def _run(cmd: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")


def _flite(voice: VoiceSpec, text: str, out: Path) -> None:
    cmd = ["flite", "-voice", voice.voice]
    if voice.f0_mean is not None:
        cmd += ["--setf", f"int_f0_target_mean={voice.f0_mean}"]
    if voice.stretch is not None or voice.warp is not None:
        # A warp shortens the audio by 1/warp (see warp_formants); speaking warp x slower keeps the tempo.
        stretch = (voice.stretch or 1.0) * (voice.warp or 1.0)
        cmd += ["--setf", f"duration_stretch={stretch:g}"]
    _run([*cmd, "-t", text, "-o", str(out)])


def _espeak(voice: VoiceSpec, text: str, out: Path) -> None:
    cmd = ["espeak-ng", "-v", voice.voice]
    if voice.pitch is not None:
        cmd += ["-p", str(voice.pitch)]
    if voice.speed is not None:
        cmd += ["-s", str(voice.speed)]
    _run([*cmd, "-w", str(out), text])


def _festival_batch(voice: VoiceSpec, texts: list[str], outs: list[Path]) -> None:
    """One festival process for many utterances: its start-up (~0.4 s) dominates a single call."""
    lines = [f"(voice_{voice.voice})"]
    for text, out in zip(texts, outs):
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{quoted}")) "{out}" \'riff)')
    _run(["festival", "--pipe"], stdin="\n".join(lines) + "\n")


def trim_silence(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut edge silence to ``KEEP_SILENCE`` s so every engine pads utterances alike."""
    env = np.abs(wav)
    floor = env.max() * 10 ** (-TRIM_DB / 20)
    loud = np.flatnonzero(env > floor)
    if loud.size == 0:
        return wav
    keep = int(KEEP_SILENCE * sample_rate)
    return wav[max(0, loud[0] - keep) : loud[-1] + 1 + keep]


def warp_formants(wav: np.ndarray, sample_rate: int, warp: float) -> np.ndarray:
    """Play ``wav`` ``warp`` x faster: pitch and formants scale by ``warp`` (a shorter or longer vocal
    tract), which a speaker encoder hears as another speaker, unlike an f0 shift alone
    (resemblyzer cosine to the source voice: f0 shift 0.99, warp 0.85 + f0 shift 0.79)."""
    return resample(wav, int(round(sample_rate * warp)), sample_rate)


def synthesize(voice: VoiceSpec, items: list[tuple[str, str]]) -> list[int]:
    """Speak each ``(text, wav_path)`` in ``voice``; write 16 kHz PCM16; return sample counts.

    Raw engine output (16 kHz flite/festival, 22.05 kHz espeak) goes to a temp folder and is
    resampled, edge-trimmed and peak-normalised into the final path.
    """
    texts = [t for t, _ in items]
    with tempfile.TemporaryDirectory(prefix="speechlm-tts-") as tmp:
        raws = [Path(tmp) / f"{i}.wav" for i in range(len(items))]
        if voice.engine == "festival":
            _festival_batch(voice, texts, raws)
        else:
            speak = _flite if voice.engine == "flite" else _espeak
            for text, raw in zip(texts, raws):
                speak(voice, text, raw)
        lengths = []
        for raw, (_, dst) in zip(raws, items):
            wav = load_audio(raw, sample_rate=SAMPLE_RATE).wav
            if voice.warp is not None:
                wav = warp_formants(wav, SAMPLE_RATE, voice.warp)
            wav = peak_normalize(trim_silence(wav, SAMPLE_RATE), PEAK)
            save_audio(dst, wav, SAMPLE_RATE)
            lengths.append(len(wav))
    return lengths
