"""Model evaluation: ``speechlm eval CKPT --data DIR --split test --json OUT`` (study §4, Appendix D).

Two steps, kept apart so a study can re-score saved audio with other judges:

1. :func:`generate_split` -- the trained SLM speaks every row of a corpus split through the public
   :class:`~speechlm.inference.api.Synthesizer`: a TTS row's text in the row's voice (Table 1/2), a
   spoken-QA row's question in its role's voice, which gives a text answer and its speech (Table 3).
   Wavs go to ``OUT_DIR/audio/<id>.wav``; each row becomes a :class:`GeneratedItem`.
2. :func:`score_items` -- the judges turn the items into the summary of DESIGN.md §8:
   ``{success_rate, wer, sim_seen, sim_unseen, mos, mos_judge, rtf, em, f1}`` (+ ``em_in/f1_in``,
   ``em_out/f1_out`` for Table 3's two domains). QA keys exist only for QA data; a figure that could
   not be measured is ``null``, never 0.

Definitions (Appendix D):
- **SR**: :func:`speechlm.eval.metrics.check_success` on each item (END reached, audible, a plausible
  duration for its reference text); failures keep their reason in the item.
- **WER**: the ASR judge's transcript of the generated speech against what it should say: the input
  text for TTS, the model's own text answer for QA ("the text response", Appendix D). Corpus-level,
  over successful items only, so WER measures intelligibility and SR measures failures.
- **SIM**: cosine of speaker-judge embeddings, generated speech vs the ground-truth recording of the
  same row (the same words in the target voice), split by whether the voice was seen in training.
- **MOS** is named by its judge (``mos_judge``): DNSMOS by default, never reported as "UTMOS".
- **RTF**: generation wall time (LM + codec decode) over generated audio seconds, whole split.

**Voices.** The target voice of a row is its speaker's mean timbre vector, the same ``speaker_mean``
the speaker table holds (§2.3): over the speaker's training utterances for a seen speaker, and over
the speaker's *other* recordings in the corpus for an unseen one (leave-one-out, so the reference
recording scored by SIM never conditions its own generation).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from speechlm.audio import AudioError, load_audio, save_audio
from speechlm.data.manifest import Corpus, Utterance
from speechlm.eval import metrics
from speechlm.inference.api import SpeechResult, Synthesizer, Voice

Kind = Literal["tts", "qa"]
KINDS: tuple[Kind, ...] = ("tts", "qa")
SUMMARY_KEYS = ("success_rate", "wer", "sim_seen", "sim_unseen", "mos", "mos_judge", "rtf")
QA_KEYS = ("em", "f1", "em_in", "f1_in", "em_out", "f1_out")


@dataclass(frozen=True)
class GeneratedItem:
    """One generated utterance and what it is judged against."""

    id: str
    kind: Kind
    audio: str | None  # generated wav, relative to the evaluation folder; None = no speech frame
    reference_text: str  # what the speech should say (TTS input text / the model's QA text answer)
    reference_audio: str  # ground-truth recording of the same row in the target voice (absolute path)
    speaker: str  # the target voice
    seen: bool  # voice (TTS) or role (QA) seen in training (study Table 1 / Table 3 split)
    finished: bool  # generation stopped at END
    seconds: float  # this item's share of its batch's generation wall time
    audio_seconds: float
    question: str | None = None  # QA only
    predicted: str | None = None  # QA only: the model's text answer
    gold: str | None = None  # QA only: the bare gold answer (EM/F1)
    domain: str | None = None  # QA only: "in" | "out"


@dataclass(frozen=True)
class Judges:
    """ASR, speaker and quality judges (``speechlm.eval.judges``); any may be None to skip its figure."""

    asr: Any = None  # .transcribe(wav [N] @16 kHz) -> str, .name
    speaker: Any = None  # .embed(wav) -> [Ds], .name
    quality: Any = None  # .score(wav) -> float, .name

    @classmethod
    def default(cls, corpus_dir: Path) -> Judges:
        """Offline defaults: pocketsphinx with the corpus's domain LM, resemblyzer, DNSMOS."""
        from speechlm.eval.judges import AsrJudge, QualityJudge, SpeakerJudge

        return cls(asr=AsrJudge.default(corpus_dir), speaker=SpeakerJudge.default(), quality=QualityJudge.default())

    @property
    def sample_rate(self) -> int:
        return 16_000  # every judge reads 16 kHz mono (DESIGN.md §4)


# ---------------------------------------------------------------------------------------------
# Voices
# ---------------------------------------------------------------------------------------------


class VoiceBank:
    """Target voices of corpus rows (module docstring, "Voices"); timbre vectors are cached per file."""

    def __init__(self, synth: Synthesizer, corpus: Corpus) -> None:
        self.synth, self.corpus = synth, corpus
        self._vectors: dict[str, torch.Tensor] = {}
        self._by_speaker: dict[str, list[Utterance]] = defaultdict(list)
        for row in [*corpus.tts(), *corpus.qa()]:
            self._by_speaker[row.speaker].append(row)

    def voice(self, row: Utterance) -> Voice:
        if not self.synth.uses_speaker:
            return Voice("", None)
        if row.speaker in self.synth.speakers.vectors:
            return self.synth.voice(row.speaker)
        pool = [r for r in self._by_speaker[row.speaker] if r.split == "train"]
        if not pool:  # unseen voice: its other recordings, never the one SIM compares against
            pool = [r for r in self._by_speaker[row.speaker] if r.id != row.id]
        if not pool:
            raise ValueError(f"speaker {row.speaker!r} has no recording besides {row.id!r} to take a voice from")
        return Voice(row.speaker, torch.stack([self._vector(r) for r in pool]).mean(0))

    def _vector(self, row: Utterance) -> torch.Tensor:
        if row.id not in self._vectors:
            self._vectors[row.id] = self.synth.reference_vector(self.corpus.audio_path(row))
        return self._vectors[row.id]


def is_seen(corpus: Corpus, row: Utterance) -> bool:
    """Seen in training: the role for QA rows (Table 3), the speaker for TTS rows (Table 1)."""
    if row.is_qa and row.role in corpus.roles:
        return corpus.roles[row.role].seen
    if row.speaker not in corpus.speakers:
        raise ValueError(f"row {row.id!r}: speaker {row.speaker!r} is not in {corpus.root}/corpus.json")
    return corpus.speakers[row.speaker].seen


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def select_rows(corpus: Corpus, split: str, kinds: Sequence[Kind] = KINDS, limit: int = 0) -> dict[Kind, list[Utterance]]:
    """The rows to evaluate per kind; ``limit`` > 0 keeps the first N of each kind."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown evaluation kind(s) {unknown}; choose from {KINDS}")
    rows: dict[Kind, list[Utterance]] = {}
    for kind in kinds:
        selected = corpus.tts(split) if kind == "tts" else corpus.qa(split)
        if selected:
            rows[kind] = selected[: limit or None]
    if not rows:
        raise ValueError(f"corpus {corpus.root} has no {'/'.join(kinds)} rows in split {split!r}")
    return rows


def generate_split(
    synth: Synthesizer,
    corpus: Corpus,
    rows: dict[Kind, list[Utterance]],
    out_dir: Path,
    progress: bool = True,
) -> list[GeneratedItem]:
    """Speak every row (grouped by voice, batched by ``synth.batch_size``); see the module docstring."""
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    bank = VoiceBank(synth, corpus)
    total = sum(len(r) for r in rows.values())
    bar = tqdm(total=total, desc="generate", unit="utt", disable=not progress)
    items: list[GeneratedItem] = []
    for kind, kind_rows in rows.items():
        for speaker_rows in _by_speaker(kind_rows):
            voice = bank.voice(speaker_rows[0])
            for start in range(0, len(speaker_rows), synth.batch_size):
                chunk = speaker_rows[start : start + synth.batch_size]
                t0 = time.perf_counter()
                if kind == "tts":
                    results = synth.tts([r.text for r in chunk], voice)
                else:
                    results = synth.ask([r.question or "" for r in chunk], voice)
                share = (time.perf_counter() - t0) / len(chunk)
                items += [_item(corpus, row, res, kind, share, out_dir) for row, res in zip(chunk, results)]
                bar.update(len(chunk))
    bar.close()
    order = {row.id: i for i, row in enumerate(r for kind_rows in rows.values() for r in kind_rows)}
    return sorted(items, key=lambda item: order[item.id])


def _by_speaker(rows: Iterable[Utterance]) -> list[list[Utterance]]:
    groups: dict[str, list[Utterance]] = defaultdict(list)
    for row in rows:
        groups[row.speaker].append(row)
    return list(groups.values())


def _item(corpus: Corpus, row: Utterance, res: SpeechResult, kind: Kind, seconds: float, out_dir: Path) -> GeneratedItem:
    audio = None
    if res.wav.size:
        audio = f"audio/{row.id}.wav"
        save_audio(out_dir / audio, res.wav, res.sample_rate)
    qa = kind == "qa"
    return GeneratedItem(
        id=row.id,
        kind=kind,
        audio=audio,
        reference_text=res.text if qa else row.text,
        reference_audio=str(corpus.audio_path(row).resolve()),
        speaker=row.speaker,
        seen=is_seen(corpus, row),
        finished=res.finished,
        seconds=seconds,
        audio_seconds=res.audio_seconds,
        question=row.question if qa else None,
        predicted=res.text if qa else None,
        gold=row.answer if qa else None,
        domain=row.domain if qa else None,
    )


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def score_items(items: Sequence[GeneratedItem], root: Path, judges: Judges, progress: bool = True) -> dict[str, Any]:
    """``{"summary": {...}, "items": [...]}`` for generated items whose audio lies under ``root``."""
    if not items:
        raise ValueError("no generated items to score")
    rows = [_judge_item(item, root, judges) for item in tqdm(items, desc="judge", unit="utt", disable=not progress)]
    return {"summary": summarize(items, rows, judges), "items": rows}


def _judge_item(item: GeneratedItem, root: Path, judges: Judges) -> dict[str, Any]:
    """One item's judgements: success (+ reason), transcript, SIM, MOS, EM/F1; None where not measured."""
    row: dict[str, Any] = {**asdict(item), "success": False, "failure": None, "hyp": None, "sim": None, "mos": None}
    wav = None
    if item.audio is not None:
        try:
            wav = load_audio(root / item.audio, sample_rate=judges.sample_rate).wav
        except (AudioError, FileNotFoundError) as err:
            row["failure"] = str(err)
    check = metrics.check_success(wav, judges.sample_rate, finished=item.finished, text=item.reference_text or None)
    row["success"], row["failure"] = check.ok, row["failure"] or check.reason
    if item.kind == "qa" and item.gold is not None:
        row["em"], row["f1"] = metrics.exact_match_f1(item.predicted or "", item.gold)
    if not check.ok or wav is None:
        return row
    if judges.asr is not None:
        row["hyp"] = judges.asr.transcribe(wav)
    if judges.speaker is not None:
        ref = load_audio(item.reference_audio, sample_rate=judges.sample_rate).wav
        row["sim"] = metrics.cosine(judges.speaker.embed(ref), judges.speaker.embed(wav))
    if judges.quality is not None:
        row["mos"] = float(judges.quality.score(wav))
    return row


def summarize(items: Sequence[GeneratedItem], rows: Sequence[dict[str, Any]], judges: Judges) -> dict[str, Any]:
    """The DESIGN.md §8 summary (+ counts, judge names and Table 3's per-domain EM/F1)."""
    ok = [r for r in rows if r["success"]]
    heard = [r for r in ok if r["hyp"] is not None and metrics.normalize_text(r["reference_text"])]
    audio_seconds = sum(i.audio_seconds for i in items)
    summary: dict[str, Any] = {
        "success_rate": len(ok) / len(rows),
        "wer": metrics.wer([r["reference_text"] for r in heard], [r["hyp"] for r in heard]) if heard else None,
        "sim_seen": _mean(r["sim"] for r in rows if r["seen"]),
        "sim_unseen": _mean(r["sim"] for r in rows if not r["seen"]),
        "mos": _mean(r["mos"] for r in rows),
        "mos_judge": getattr(judges.quality, "name", None),
        "rtf": metrics.rtf(sum(i.seconds for i in items), audio_seconds) if audio_seconds > 0 else None,
        "asr_judge": getattr(judges.asr, "name", None),
        "speaker_judge": getattr(judges.speaker, "name", None),
        "items": len(rows),
        "audio_seconds": audio_seconds,
    }
    qa = [r for r in rows if r["kind"] == "qa"]
    if qa:
        for suffix, subset in (("", qa), ("_in", [r for r in qa if r["domain"] == "in"]), ("_out", [r for r in qa if r["domain"] == "out"])):
            summary[f"em{suffix}"] = _mean(r["em"] for r in subset)
            summary[f"f1{suffix}"] = _mean(r["f1"] for r in subset)
    return summary


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def evaluate_model(
    synth: Synthesizer,
    corpus_dir: Path,
    out_dir: Path,
    judges: Judges,
    *,
    split: str = "test",
    kinds: Sequence[Kind] = KINDS,
    limit: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate on ``split`` of the corpus into ``out_dir`` and score it; returns the report."""
    corpus = Corpus.open(corpus_dir)
    rows = select_rows(corpus, split, kinds, limit)
    items = generate_split(synth, corpus, rows, out_dir, progress=progress)
    report = score_items(items, out_dir, judges, progress=progress)
    report["summary"].update(split=split, corpus=str(corpus_dir))
    return report


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a one-row markdown table (QA columns only when present)."""
    keys = [*SUMMARY_KEYS, *(k for k in QA_KEYS if k in summary)]
    cells = [_fmt(summary.get(k)) for k in keys]
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys), "| " + " | ".join(cells) + " |"])


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_report(report: dict[str, Any], path: Path) -> Path:
    """JSON (atomically) + the markdown table beside it (``OUT.md``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(path)
    path.with_suffix(".md").write_text(format_table(report["summary"]) + "\n")
    return path
