"""One (cell, seed) of a study: train it under the study's budget, then evaluate and analyse it.

Kept apart from :mod:`speechlm.eval.study` (grid, config, resume logic) because this is the only
part that touches models; the runner's logic is testable with a fake cell runner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechlm.data.manifest import Corpus, Utterance
from speechlm.eval.evaluate import QA_KINDS, GeneratedItem, evaluate_model, score_items
from speechlm.eval.judges import Judges
from speechlm.eval.model_alignment import align_checkpoint
from speechlm.eval.study import CellSpec, StudyConfig, cell_overrides, judges_for, result_path
from speechlm.eval.text_gain import text_gain
from speechlm.inference.api import Synthesizer
from speechlm.runtime import resolve_device
from speechlm.train.checkpoint import latest_checkpoint, load_slm, resolve_checkpoint
from speechlm.train.config import TrainConfig, load_train_config
from speechlm.train.loop import train
from speechlm.train.monitor import LOG_FILE

# Item fields kept in a cell's results (the wavs stay in the run folder).
_ITEM_KEYS = ("id", "kind", "speaker", "seen", "domain", "success", "failure", "text", "hypothesis",
              "wer", "sim", "mos", "question", "predicted", "em", "f1", "audio_seconds")  # fmt: skip


@dataclass(frozen=True)
class TrainedCell:
    config: TrainConfig
    checkpoint: Path  # the final checkpoint folder
    summary: dict[str, Any]  # TrainResult.to_json()
    loss_curve: list[tuple[int, float]]  # (step, mean training loss of the logging window): Figure 4


def train_cell(study: StudyConfig, cell: CellSpec, seed: int) -> TrainedCell:
    """Train (or finish training, or reuse a finished run of) one (cell, seed)."""
    cfg = load_train_config(cell.config, cell_overrides(study, cell, seed))
    out = cfg.train.out_dir
    summary_file = out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    if summary is None or summary.get("steps") != cfg.train.max_steps:
        summary = train(cfg, resume=latest_checkpoint(out) is not None).to_json()
    return TrainedCell(cfg, resolve_checkpoint(out), summary, read_loss_curve(out / LOG_FILE))


def read_loss_curve(path: Path) -> list[tuple[int, float]]:
    """(step, loss) rows of a run's JSONL log; a resumed run's repeated steps keep their last value."""
    if not path.is_file():
        return []
    points: dict[int, float] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            points[int(row["step"])] = float(row["loss"])
    return sorted(points.items())


def cell_facts(synth: Synthesizer, cfg: TrainConfig) -> dict[str, Any]:
    """What the tables print about a cell's setup: tokenizer, Nq, token rate, g, steps per audio second."""
    layout, codec, model = synth.layout, synth.codec, synth.model
    nq = len(layout.cfg.streams)
    tps = codec.frame_rate * nq  # speech tokens per second of audio the LM models (Table 1 "TPS")
    sizes = [codec.streams[k].codebook_size for k in layout.cfg.streams]
    return {
        "tokenizer": synth.loaded.meta.tokenizer.get("name"),
        "coupling": codec.coupling,
        "codebook_size": max(sizes),
        "codebook_sizes": sizes,
        "nq": nq,
        "frame_rate": codec.frame_rate,
        "token_rate": tps,
        "group_size": layout.group_size,
        "steps_per_audio_second": tps / layout.group_size,  # LM decoding steps per second of speech (§2.2)
        "speaker_aware": model.cfg.speaker_dim > 0,
        "fusion": model.cfg.fusion,
        "head": model.cfg.head,
        "order": layout.cfg.order,
        "stage": cfg.train.stage,
        "tasks": list(cfg.data.task.tasks),
        "params": sum(p.numel() for p in model.parameters()),
    }


def evaluate_cell(study: StudyConfig, cell: CellSpec, seed: int, trained: TrainedCell, out: Path) -> dict[str, Any]:
    """Generate + judge on the study's split, alignment when the cell asks; the results record."""
    spec = cell.eval or study.eval
    synth = Synthesizer.load(trained.checkpoint, device=study.device, generation=spec.generation, batch_size=spec.batch_size)
    eval_dir = trained.config.train.out_dir / "eval"
    report = evaluate_model(
        synth, study.corpus, eval_dir, judges_for(study, spec), split=spec.split, kinds=spec.kinds, limit=spec.limit
    )
    result: dict[str, Any] = {
        "label": cell.label or cell.name,
        "tables": list(cell.tables),
        "overrides": cell_overrides(study, cell, seed),
        "checkpoint": str(trained.checkpoint),
        "facts": cell_facts(synth, trained.config),
        "train": trained.summary,
        "loss_curve": trained.loss_curve,
        "eval": report["summary"],
        "items": [{k: item.get(k) for k in _ITEM_KEYS} for item in report["items"]],
        "align": None,
    }
    if cell.align:
        plot = result_path(out, cell.name, seed).with_name(f"umap_seed{seed}.png")
        result["align"] = align_checkpoint(trained.checkpoint, study.corpus, split=spec.split, plot=plot, device=study.device)
    return with_text_gain(study, cell, result)


def with_text_gain(study: StudyConfig, cell: CellSpec, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` plus the text gain (:mod:`speechlm.eval.text_gain`) of its checkpoint on the cell's
    test rows: a summary under ``text_gain`` and each TTS item's own gain. Cells whose model was not
    trained on TTS, or whose evaluation has no TTS items, get ``text_gain: None``."""
    spec = cell.eval or study.eval
    if "tts" not in spec.kinds or "tts" not in result["facts"]["tasks"]:
        return {**result, "text_gain": None}
    loaded = load_slm(result["checkpoint"], device=resolve_device(study.device))
    gain = text_gain(loaded, Corpus.open(study.corpus), spec.split, limit=spec.limit)
    items = [{**it, "text_gain": gain.per_item.get(it["id"])} if it["kind"] == "tts" else it for it in result["items"]]
    summary = {k: v for k, v in gain.to_dict().items() if k != "per_item"}
    return {**result, "text_gain": summary, "items": items}


def rejudge_cell(study: StudyConfig, result: dict[str, Any], judges: Judges) -> dict[str, Any]:
    """A finished (cell, seed)'s results re-scored by ``judges`` from the wavs its evaluation kept.

    Nothing is generated again, so the figures that belong to generation stay: which items finished
    (reached END), their text answers and the RTF. Success, WER, SIM, MOS and EM/F1 are recomputed;
    the judges' names in ``eval`` say which judges the figures are from.
    """
    corpus = Corpus.open(study.corpus)
    rows = {row.id: row for row in (*corpus.tts_rows, *corpus.qa_rows)}
    eval_dir = Path(result["train"]["out_dir"]) / "eval"
    missing = [it["id"] for it in result["items"] if it["id"] not in rows]
    if missing:
        raise ValueError(f"cell {result['cell']!r}: items {missing[:3]} are not in corpus {study.corpus}")
    items = [_kept_item(corpus, rows[it["id"]], it, eval_dir) for it in result["items"]]
    report = score_items(items, eval_dir, judges, progress=False)
    kept = {k: result["eval"].get(k) for k in ("rtf", "split", "corpus")}
    gains = {it["id"]: it["text_gain"] for it in result["items"] if it.get("text_gain") is not None}  # not a judge's
    items = [{k: item.get(k) for k in _ITEM_KEYS} for item in report["items"]]
    return {
        **result,
        "eval": {**report["summary"], **kept},
        "items": [{**it, "text_gain": gains[it["id"]]} if it["id"] in gains else it for it in items],
    }


def _kept_item(corpus: Corpus, row: Utterance, item: dict[str, Any], eval_dir: Path) -> GeneratedItem:
    """The evaluation's :class:`GeneratedItem` rebuilt from a results item and its kept wav."""
    audio = f"audio/{item['id']}.wav"
    qa = item["kind"] in QA_KINDS
    return GeneratedItem(
        id=item["id"],
        kind=item["kind"],
        audio=audio if (eval_dir / audio).is_file() else None,
        reference_text=item["text"],  # TTS: the input text; QA: the model's own text answer
        reference_audio=str(corpus.audio_path(row).resolve()),
        speaker=item["speaker"],
        seen=item["seen"],
        finished=item["failure"] != "unfinished",
        seconds=0.0,  # generation time is not re-measured; RTF is kept from the original run
        audio_seconds=item.get("audio_seconds") or 0.0,
        question=item.get("question"),
        predicted=item.get("predicted"),
        gold=row.answer if qa else None,
        domain=item.get("domain"),
    )
