"""Model evaluation: ``speechlm eval CKPT --data DIR --split test --json OUT`` (study §4, Appendix D).

Two steps, kept apart so a study can re-score saved audio with other judges:

1. :func:`generate_split` -- the trained SLM speaks every row of a corpus split through the public
   :class:`~speechlm.inference.api.Synthesizer`: a TTS row's text in the row's voice (Table 1/2), a
   spoken-QA row's question in its role's voice, which gives a text answer and its speech (Table 3).
   Wavs go to ``OUT_DIR/audio/<id>.wav``; each row becomes a :class:`GeneratedItem`.
2. :func:`score_items` -- the evaluation runner (:mod:`speechlm.eval.runner`) and its judges turn the
   items into the summary of DESIGN.md §8:
   ``{success_rate, wer, sim_seen, sim_unseen, mos, mos_judge, rtf, em, f1}`` (+ ``em_in/f1_in``,
   ``em_out/f1_out`` for Table 3's two domains). QA keys exist only for QA data; a figure that could
   not be measured is ``null``, never 0.

Definitions (Appendix D):
- **SR**: the runner's success rule (:func:`speechlm.eval.metrics.check_success`: END reached, audible,
  a plausible duration for its reference text); failures keep their reason in the item.
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

import time
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from speechlm.audio import save_audio
from speechlm.data.manifest import Corpus, Utterance, spread
from speechlm.eval.judges import Judges
from speechlm.eval.report import markdown_table, write_json
from speechlm.eval.runner import EvalRow, Evaluator
from speechlm.inference.api import SpeechResult, Synthesizer, Voice
from speechlm.inference.generate import PromptBatch

Kind = Literal["tts", "qa", "text_qa"]
KINDS: tuple[Kind, ...] = ("tts", "qa", "text_qa")
QA_KINDS = frozenset({"qa", "text_qa"})
DEFAULT_KINDS: tuple[Kind, ...] = ("tts", "qa")
SUMMARY_KEYS = ("success_rate", "wer", "sim_seen", "sim_unseen", "speaker_top1_seen", "mos", "mos_judge", "rtf")
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

    def voice(self, speaker: str, exclude: Collection[str] = ()) -> Voice | None:
        """The voice of ``speaker``, never built from the recordings of the rows in ``exclude`` (the rows
        being generated, whose recordings SIM compares against); None when no other recording exists."""
        if not self.synth.uses_speaker:
            return Voice("", None)
        if speaker in self.synth.speakers.vectors:
            return self.synth.voice(speaker)
        pool = [r for r in self._by_speaker[speaker] if r.split == "train"]
        if not pool:  # unseen voice: its other recordings
            pool = [r for r in self._by_speaker[speaker] if r.id not in exclude]
        if not pool:
            return None
        return Voice(speaker, torch.stack([self._vector(r) for r in pool]).mean(0))

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


def select_rows(corpus: Corpus, split: str, kinds: Sequence[Kind] = DEFAULT_KINDS, limit: int = 0) -> dict[Kind, list[Utterance]]:
    """The rows to evaluate per kind; ``limit`` > 0 keeps N of each kind (of each QA domain, since
    Table 3 reports in-domain and out-of-domain questions separately), taken at an even stride so that
    every speaker / role of the split stays represented (the manifests are grouped by speaker)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown evaluation kind(s) {unknown}; choose from {KINDS}")
    rows: dict[Kind, list[Utterance]] = {}
    for kind in kinds:
        if kind == "tts":
            selected = spread(corpus.tts(split), limit)
        else:
            selected = [r for domain in ("in", "out") for r in spread(corpus.qa(split, domain=domain), limit)]
        if kind == "text_qa" and "qa" in kinds:
            raise ValueError("evaluate 'qa' (spoken answers) or 'text_qa' (text-only baseline), not both: they share row ids")
        if selected:
            rows[kind] = selected
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
        for chunk, voice in _voice_batches(bank, kind, kind_rows, synth.batch_size):
            t0 = time.perf_counter()
            if kind == "tts":
                results = synth.tts([r.text for r in chunk], voice)
            elif kind == "qa":
                results = synth.ask([r.question or "" for r in chunk], voice)
            else:
                results = answer_in_text(synth, [r.question or "" for r in chunk])
            share = (time.perf_counter() - t0) / len(chunk)
            items += [_item(corpus, row, res, kind, share, out_dir) for row, res in zip(chunk, results)]
            bar.update(len(chunk))
    bar.close()
    order = {row.id: i for i, row in enumerate(r for kind_rows in rows.values() for r in kind_rows)}
    return sorted(items, key=lambda item: order[item.id])


def answer_in_text(synth: Synthesizer, questions: Sequence[str]) -> list[SpeechResult]:
    """Text-only QA, Table 3's LLM baseline: the ``text`` task prompt; the answer ends at EOS.

    The Generator always follows a text answer with speech, so that phase is capped at one frame and
    its output dropped (a text-only model has no speaker slot, hence no voice).
    """
    items = [replace(synth.prompt("text", q, Voice("", None)), text_first=True, max_frames=1) for q in questions]
    out = synth.generator.generate(PromptBatch.from_items(items, synth.text.pad_id))
    empty = np.zeros(0, dtype=np.float32)
    return [SpeechResult(text=t, wav=empty, sample_rate=synth.codec.sample_rate, speaker="", frames=0, finished=True) for t in out.text]


def _voice_batches(
    bank: VoiceBank, kind: Kind, rows: Sequence[Utterance], batch_size: int
) -> Iterator[tuple[list[Utterance], Voice]]:
    """Batches of one voice each. A voice whose only other recordings are in the batch itself is
    generated one row at a time, each from the recordings of the others (leave-one-out)."""
    groups: dict[str, list[Utterance]] = defaultdict(list)
    for row in rows:
        groups[row.speaker].append(row)
    for speaker, group in groups.items():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            if kind == "text_qa":
                yield chunk, Voice("", None)
                continue
            voice = bank.voice(speaker, exclude={r.id for r in chunk})
            if voice is not None:
                yield chunk, voice
                continue
            for row in chunk:
                single = bank.voice(speaker, exclude={row.id})
                if single is None:
                    raise ValueError(f"speaker {speaker!r} has no recording besides {row.id!r} to take a voice from")
                yield [row], single


def _item(corpus: Corpus, row: Utterance, res: SpeechResult, kind: Kind, seconds: float, out_dir: Path) -> GeneratedItem:
    audio = None
    if res.wav.size:
        audio = f"audio/{row.id}.wav"
        save_audio(out_dir / audio, res.wav, res.sample_rate)
    qa = kind in QA_KINDS
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
# Scoring (the evaluation runner of speechlm.eval.runner)
# ---------------------------------------------------------------------------------------------


def eval_rows(items: Sequence[GeneratedItem], root: Path) -> list[EvalRow]:
    """The runner's rows: generated audio under ``root``, reference text/recording, seen flag, timing."""
    return [
        EvalRow(
            id=item.id,
            text=item.reference_text,
            audio=None if item.audio is None else root / item.audio,
            ref_audio=Path(item.reference_audio),
            speaker=item.speaker,
            seen=item.seen,
            finished=item.finished,
            seconds=item.seconds,
            pred_answer=item.predicted,
            gold_answer=None if item.gold is None else (item.gold,),
            extra={"kind": item.kind, "domain": item.domain, "question": item.question, "predicted": item.predicted,
                   "reference_audio": item.reference_audio},  # fmt: skip
        )
        for item in items
    ]


def score_items(items: Sequence[GeneratedItem], root: Path, judges: Judges, progress: bool = True) -> dict[str, Any]:
    """``{"summary": {...}, "items": [...]}`` (module docstring) for items whose audio lies under ``root``."""
    if not items:
        raise ValueError("no generated items to score")
    result = Evaluator(judges).run(eval_rows(items, root), progress=progress)
    summary = dict(result.summary)
    qa = [it for it in result.items if it["kind"] in QA_KINDS]
    if all(it["kind"] == "text_qa" for it in result.items):  # a text-only model: no speech to judge
        summary.update(success_rate=None, rtf=None)
    if qa:  # Table 3 reports in-domain and out-of-domain separately
        for domain in ("in", "out"):
            scored = [it for it in qa if it["domain"] == domain and "em" in it]
            summary[f"em_{domain}"] = float(np.mean([it["em"] for it in scored])) if scored else None
            summary[f"f1_{domain}"] = float(np.mean([it["f1"] for it in scored])) if scored else None
    else:
        for key in ("em", "f1"):
            summary.pop(key, None)  # QA keys only for QA data (DESIGN.md §8)
    return {"summary": summary, "items": result.items}


def no_judges() -> Judges:
    """SR, RTF and EM/F1 only: every judge-based figure comes out null."""
    return Judges(asr=None, speaker=None, quality=None)


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
    kinds: Sequence[Kind] = DEFAULT_KINDS,
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
    """The summary as a one-row markdown table (QA columns only when present) + the judges' names."""
    keys = [*SUMMARY_KEYS, *(k for k in QA_KEYS if k in summary)]
    table = markdown_table([summary], [k for k in ("n_items", *keys)])
    judges = ", ".join(f"{k}={summary[k]}" for k in ("asr_judge", "sim_judge", "mos_judge") if summary.get(k))
    return table + (f"\nJudges: {judges}.\n" if judges else "")


def write_report(report: dict[str, Any], path: Path) -> Path:
    """JSON (atomically) + the markdown table beside it (``OUT.md``)."""
    write_json(report, path)
    path.with_suffix(".md").write_text(format_table(report["summary"]), encoding="utf-8")
    return path
