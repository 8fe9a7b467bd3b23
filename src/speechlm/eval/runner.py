"""The reusable evaluation runner: generated audio + references -> SR, WER, SIM, MOS, RTF, EM/F1.

Input is a JSONL manifest, one row per generated utterance (paths relative to the manifest):

    {"id": "u1", "audio": "wav/u1.wav", "text": "reference words", "ref_audio": "prompt.wav",
     "speaker": "slt", "seen": true, "finished": true, "seconds": 0.42,
     "pred_answer": "paris", "gold_answer": ["paris"]}

Only ``id`` and ``text`` are required; other keys of the row (``audio_seconds`` of
``speechlm tts --file`` ...) are carried along untouched. The output is
``{"summary": {...}, "items": [...]}`` (DESIGN.md §8) plus a markdown table (report.py).

Rules (study Appendix D; DESIGN.md §7):
- **SR** counts every row; an utterance fails by :func:`~speechlm.eval.metrics.check_success`
  (no end token, missing/unreadable/empty/silent/too-short audio, implausible duration). Bad
  items are failures with a reason — they never stop the run.
- **WER, SIM, MOS** are measured on the successful utterances only, so a model is not scored
  twice for one failure; WER is corpus-level (edits summed over utterances).
- **SIM** compares each clip with its ``ref_audio`` (the speaker prompt / target speaker's
  reference) and is split by the ``seen`` flag (study Table 1: seen vs unseen speakers).
- **Speaker rank**: each clip is also compared with every speaker of the run (the mean embedding
  of that speaker's ``ref_audio`` files); ``speaker_rank`` 1 means the requested speaker is the
  closest of them all, and ``speaker_top1_seen``/``_unseen`` is the share of clips ranked 1
  (needs at least two speakers with references).
- **RTF** = total generation seconds / total generated audio seconds (rows with ``seconds``).
- A figure with nothing to average is ``null``, never 0.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from speechlm.audio import AudioError, load_audio
from speechlm.eval.judges import JUDGE_SAMPLE_RATE, Judges, JudgesConfig
from speechlm.eval.metrics import (
    ErrorCounts,
    SuccessCriteria,
    check_success,
    cosine,
    exact_match_f1,
    normalize_text,
    word_errors,
)
from speechlm.eval.report import summary_table, write_json


@dataclass(frozen=True)
class EvalRow:
    """One generated utterance to evaluate (a row of the input manifest)."""

    id: str
    text: str  # reference text the audio should say
    audio: Path | None = None  # generated audio; None = nothing was produced
    ref_audio: Path | None = None  # speaker reference for SIM
    speaker: str | None = None
    seen: bool | None = None  # speaker seen in training (SIM seen/unseen split)
    finished: bool = True  # generation emitted its end token before the length limit
    seconds: float | None = None  # generation wall time, for RTF
    pred_answer: str | None = None  # spoken-QA text answer (EM/F1)
    gold_answer: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunnerConfig:
    """``speechlm eval``-style evaluation settings (YAML maps 1:1)."""

    judges: JudgesConfig = field(default_factory=JudgesConfig)
    success: SuccessCriteria = field(default_factory=SuccessCriteria)


_KNOWN = {"id", "text", "audio", "ref_audio", "speaker", "seen", "finished", "seconds", "pred_answer", "gold_answer"}


def _typed(row: dict[str, Any], key: str, types: tuple[type, ...], where: str) -> Any:
    """``row[key]`` (None when absent) after checking its JSON type."""
    value = row.get(key)
    if value is None:
        return None
    # bool is an int subclass in Python: accept true/false only where a bool is asked for.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise ValueError(f"{where}: {key!r} must be {' or '.join(t.__name__ for t in types)}, got {value!r}")
    return value


def parse_row(row: dict[str, Any], base: Path, where: str) -> EvalRow:
    """Validate one manifest row; relative paths are resolved against ``base``."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if not isinstance(row.get("id"), str) or not row["id"]:
        raise ValueError(f"{where}: missing or empty 'id'")
    if not isinstance(row.get("text"), str):
        raise ValueError(f"{where}: 'text' (the reference) must be a string")

    def path(key: str) -> Path | None:
        value = _typed(row, key, (str,), where)
        return None if value is None else base / value

    gold = _typed(row, "gold_answer", (str, list), where)
    return EvalRow(
        id=row["id"],
        text=row["text"],
        audio=path("audio"),
        ref_audio=path("ref_audio"),
        speaker=_typed(row, "speaker", (str,), where),
        seen=_typed(row, "seen", (bool,), where),
        finished=_typed(row, "finished", (bool,), where) is not False,
        seconds=_typed(row, "seconds", (int, float), where),
        pred_answer=_typed(row, "pred_answer", (str,), where),
        gold_answer=None if gold is None else ((gold,) if isinstance(gold, str) else tuple(map(str, gold))),
        extra={k: v for k, v in row.items() if k not in _KNOWN},
    )


def read_rows(path: str | Path) -> list[EvalRow]:
    """Read an evaluation manifest; a malformed line is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation manifest not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not valid JSON ({err.msg})") from err
        rows.append(parse_row(data, path.parent, f"{path}:{n}"))
    if not rows:
        raise ValueError(f"{path}: no rows to evaluate")
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{path}: duplicate id {dup!r}")
    return rows


@dataclass(frozen=True)
class EvalResult:
    summary: dict[str, Any]
    items: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary, "items": self.items}

    def write(self, path: str | Path) -> Path:
        """``path`` gets the JSON; a markdown summary table goes beside it (``.md``)."""
        path = write_json(self.to_json(), path)
        path.with_suffix(".md").write_text(summary_table(self.summary, title=path.stem), encoding="utf-8")
        return path


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


class Evaluator:
    """Runs the judges over rows; keeps a cache of reference-speaker embeddings."""

    def __init__(self, judges: Judges, criteria: SuccessCriteria = SuccessCriteria()) -> None:
        self.judges = judges
        self.criteria = criteria
        self._ref_embeddings: dict[Path, np.ndarray] = {}
        self._embeddings: dict[str, np.ndarray] = {}  # item id -> embedding of the generated clip

    def _ref_embedding(self, path: Path) -> np.ndarray:
        if path not in self._ref_embeddings:
            self._ref_embeddings[path] = self.judges.speaker.embed(load_audio(path, JUDGE_SAMPLE_RATE).wav)
        return self._ref_embeddings[path]

    def _judge(self, row: EvalRow, wav: np.ndarray, item: dict[str, Any]) -> ErrorCounts | None:
        """Fill ``item`` with hypothesis/WER, SIM and MOS; a judge error is recorded, not raised."""
        counts, errors = None, {}
        if self.judges.asr is not None:
            try:
                item["hypothesis"] = self.judges.asr.transcribe(wav)
                if normalize_text(row.text):
                    counts = word_errors([row.text], [item["hypothesis"]])
                    item["wer"] = counts.rate
                else:
                    errors["wer"] = "empty reference text"
            except (AudioError, ValueError) as err:
                errors["asr"] = str(err)
        if self.judges.speaker is not None and row.ref_audio is not None:
            try:
                self._embeddings[row.id] = self.judges.speaker.embed(wav)
                item["sim"] = cosine(self._embeddings[row.id], self._ref_embedding(row.ref_audio))
            except (AudioError, ValueError, FileNotFoundError) as err:
                errors["sim"] = str(err)
        if self.judges.quality is not None:
            try:
                item["mos"] = self.judges.quality.score(wav)
            except (AudioError, ValueError) as err:
                errors["mos"] = str(err)
        if errors:
            item["errors"] = errors
        return counts

    def evaluate_row(self, row: EvalRow) -> tuple[dict[str, Any], ErrorCounts | None]:
        item: dict[str, Any] = {"id": row.id, "text": row.text, "speaker": row.speaker, "seen": row.seen, **row.extra}
        item.update(audio=None if row.audio is None else str(row.audio), hypothesis=None, wer=None, sim=None, mos=None)
        if row.pred_answer is not None and row.gold_answer:
            item["em"], item["f1"] = exact_match_f1(row.pred_answer, row.gold_answer)
        wav, load_error, unreadable = None, None, False
        if row.audio is not None:
            try:
                wav = load_audio(row.audio, JUDGE_SAMPLE_RATE).wav
            except FileNotFoundError as err:  # a missing file is missing audio
                load_error = str(err)
            except AudioError as err:  # a file that exists but cannot be decoded
                load_error, unreadable = str(err), True
        check = check_success(wav, JUDGE_SAMPLE_RATE, finished=row.finished, text=row.text, criteria=self.criteria)
        item["success"] = check.ok
        explained = load_error is not None and check.code == "no_audio"  # the load error says why
        item["failure"] = "unreadable" if explained and unreadable else check.code
        item["failure_reason"] = load_error if explained else check.reason
        item["audio_seconds"] = None if wav is None else len(wav) / JUDGE_SAMPLE_RATE
        counts = self._judge(row, wav, item) if check.ok else None
        return item, counts

    def run(self, rows: list[EvalRow], progress: bool = True) -> EvalResult:
        items, total = [], ErrorCounts(0, 0, 0, 0)
        for row in tqdm(rows, desc="evaluate", unit="utt", disable=not progress):
            item, counts = self.evaluate_row(row)
            items.append(item)
            total = total + counts if counts is not None else total
        self.rank_speakers(rows, items)
        return EvalResult(summary=self.summarize(rows, items, total), items=items)

    def rank_speakers(self, rows: list[EvalRow], items: list[dict[str, Any]]) -> None:
        """Set ``item["speaker_rank"]``: 1 + how many other speakers' centroids are closer than its own."""
        refs: dict[str, set[Path]] = collections.defaultdict(set)
        for row in rows:
            if row.speaker and row.ref_audio is not None and row.ref_audio in self._ref_embeddings:
                refs[row.speaker].add(row.ref_audio)
        if len(refs) < 2:
            return
        centroids = {name: np.mean([self._ref_embeddings[p] for p in sorted(paths)], axis=0) for name, paths in refs.items()}
        for item in items:
            emb = self._embeddings.get(item["id"])
            if emb is None or item["speaker"] not in centroids:
                continue
            own = cosine(emb, centroids[item["speaker"]])
            item["speaker_rank"] = 1 + sum(cosine(emb, c) > own for name, c in centroids.items() if name != item["speaker"])

    def summarize(self, rows: list[EvalRow], items: list[dict[str, Any]], total: ErrorCounts) -> dict[str, Any]:
        ok = [it for it in items if it["success"]]
        sims = [(it["sim"], it["seen"]) for it in ok if it["sim"] is not None]
        timed = [(r.seconds, it["audio_seconds"]) for r, it in zip(rows, items) if r.seconds is not None and it["audio_seconds"]]
        qa = [it for it in items if "em" in it]
        failures = collections.Counter(it["failure"] for it in items if not it["success"])
        ranked = [(it["speaker_rank"] == 1, it["seen"]) for it in ok if "speaker_rank" in it]
        return {
            "n_items": len(items),
            "n_success": len(ok),
            "success_rate": len(ok) / len(items) if items else None,
            "wer": total.rate if total.reference_length else None,
            "sim": _mean([s for s, _ in sims]),
            "sim_seen": _mean([s for s, seen in sims if seen is True]),
            "sim_unseen": _mean([s for s, seen in sims if seen is False]),
            "speaker_top1_seen": _mean([float(top) for top, seen in ranked if seen is True]),
            "speaker_top1_unseen": _mean([float(top) for top, seen in ranked if seen is False]),
            "mos": _mean([it["mos"] for it in ok if it["mos"] is not None]),
            "rtf": sum(s for s, _ in timed) / sum(a for _, a in timed) if timed else None,
            "em": _mean([it["em"] for it in qa]),
            "f1": _mean([it["f1"] for it in qa]),
            **self.judges.names(),
            "n_judge_errors": sum(1 for it in items if "errors" in it),
            "failures": dict(sorted(failures.items())),
        }


def evaluate_manifest(
    manifest: str | Path, judges: Judges, criteria: SuccessCriteria = SuccessCriteria(), progress: bool = True
) -> EvalResult:
    """Read ``manifest`` and evaluate every row (see the module doc)."""
    return Evaluator(judges, criteria).run(read_rows(manifest), progress=progress)
