"""Shipping a trained SLM: ``speechlm ship RUN --out checkpoints/slm/default [--eval EVAL.json]``.

A shipped model is an inference checkpoint folder (what :func:`~speechlm.train.checkpoint.load_slm`
reads) made small and self-describing:

- ``model.safetensors`` in fp16 (loading casts back to the model's dtype); no ``trainer_state.pt``;
- ``config.yaml`` with its speech tokenizer pointing at a shipped codec folder by a
  repository-relative path (resolved by :func:`speechlm.assets.resolve_asset`), checked to be the
  very tokenizer the model was trained on (same fingerprint);
- ``speakers.safetensors``: the named voices (:mod:`speechlm.inference.speakers`), so inference
  needs neither the training corpus nor its code cache;
- ``README.md``: a model card with the training command, data, steps, final losses and the
  ``speechlm eval`` figures when an evaluation report is given.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from speechlm import config as cfglib
from speechlm.assets import resolve_asset
from speechlm.data.codes import cache_dir_for, tokenizer_fingerprint
from speechlm.eval.report import format_value
from speechlm.inference.speakers import SPEAKERS_FILE, SpeakerTable, table_for_checkpoint
from speechlm.tokenizers.registry import load_tokenizer
from speechlm.train.checkpoint import CONFIG_FILE, META_FILE, MODEL_FILE, TEXT_DIR, read_meta, resolve_checkpoint

CARD_ROWS = (
    ("success_rate", "success rate"),
    ("wer", "WER (ASR judge)"),
    ("sim_seen", "SIM to the requested voice, seen speakers"),
    ("sim_unseen", "SIM to the reference voice, unseen speakers"),
    ("speaker_top1_seen", "requested seen speaker is the closest of all speakers"),
    ("mos", "MOS"),
    ("rtf", "real-time factor (LM + codec decode)"),
    ("em_in", "QA exact match, in-domain"),
    ("f1_in", "QA F1, in-domain"),
    ("em_out", "QA exact match, out-of-domain"),
    ("f1_out", "QA F1, out-of-domain"),
)


def _run_facts(ckpt: Path) -> dict[str, Any]:
    """The run's ``summary.json`` (steps, losses, throughput) when the checkpoint sits in a run folder."""
    summary = ckpt.parent.parent / "summary.json"
    return json.loads(summary.read_text()) if summary.is_file() else {}


def model_card(name: str, ckpt: Path, config_yaml: str, meta: dict[str, Any], facts: dict[str, Any],
               evaluation: dict[str, Any], note: str, corpus: str = "?") -> str:  # fmt: skip
    tok = meta["tokenizer"]
    lines = [
        f"# {name}",
        "",
        f"A speechlm SLM trained on the corpus `{corpus}`. Speech tokenizer: `{tok.get('name')}` "
        f"({len(tok.get('codebook_sizes', []))} streams @ {tok.get('frame_rate')} Hz). Use it with "
        "`speechlm tts \"text\" -o out.wav [--speaker NAME | --ref WAV]` and `speechlm ask \"question\" -o a.wav`.",
        "",
        *([note, ""] if note else []),
        "## Training",
        f"- from `{ckpt}`: {meta['step']} optimizer steps",
    ]
    if facts:
        lines.append(
            f"- final training loss {format_value('loss', facts.get('loss'))}, validation loss "
            f"{format_value('val_loss', facts.get('val_loss'))}, {format_value('s', facts.get('train_seconds'))} s of "
            f"training in this run at {format_value('s', facts.get('positions_per_s'))} positions/s"
        )
    lines += ["- resolved training config:", "", "```yaml", config_yaml.rstrip(), "```", ""]
    summary = evaluation.get("summary", {})
    if summary:
        judges = ", ".join(f"{k}={summary[k]}" for k in ("asr_judge", "sim_judge", "mos_judge") if summary.get(k))
        lines += [
            "## Measured (`speechlm eval`)",
            f"- split `{summary.get('split', '?')}` of `{summary.get('corpus', '?')}`, {summary.get('n_items')} items; "
            f"judges: {judges}",
            "",
            "| figure | value |",
            "|---|---|",
        ]
        lines += [f"| {label} | {format_value(key, summary.get(key))} |" for key, label in CARD_ROWS if key in summary]
        if evaluation.get("command"):
            lines += ["", f"Measured with: `{evaluation['command']}`"]
    return "\n".join(lines) + "\n"


def ship_model(
    run: str | Path, out: str | Path, *, codec: str | Path | None = None, eval_json: str | Path | None = None, note: str = ""
) -> Path:
    """Write the shipped form of ``run`` (a run folder or checkpoint) into ``out`` (replaced)."""
    from speechlm.train.config import TrainConfig  # here: train.config imports the data pipeline

    ckpt = resolve_checkpoint(run)
    meta = read_meta(ckpt)
    cfg = cfglib.load(TrainConfig, ckpt / CONFIG_FILE)
    if codec is not None:
        cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, checkpoint=Path(codec), config=None))
    if cfg.tokenizer.checkpoint is None:
        raise ValueError(f"{ckpt} was trained on a random-init tokenizer config; only a model with a trained codec can ship")
    tok = load_tokenizer(resolve_asset(cfg.tokenizer.checkpoint))
    if tokenizer_fingerprint(tok) != meta.tokenizer_fingerprint:
        raise ValueError(f"{cfg.tokenizer.checkpoint} is not the speech tokenizer {ckpt} was trained on (fingerprints differ)")
    speakers = SpeakerTable.load(ckpt)
    if tok.speaker_dim and not len(speakers):
        cache = cache_dir_for(cfg.data.cache_dir, tok, meta.tokenizer_fingerprint)
        speakers = table_for_checkpoint(ckpt, cfg.data.corpus, cfg.data.train_split, cache)
        if not len(speakers):
            raise FileNotFoundError(f"{ckpt} has no {SPEAKERS_FILE} and its training code cache {cache} is gone")
    evaluation: dict[str, Any] = {}
    if eval_json is not None:
        evaluation = json.loads(Path(eval_json).read_text())
        evaluation.pop("items", None)

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = load_file(str(ckpt / MODEL_FILE))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, str(tmp / MODEL_FILE))
    cfglib.dump(cfg, tmp / CONFIG_FILE)
    shutil.copy2(ckpt / META_FILE, tmp / META_FILE)
    shutil.copytree(ckpt / TEXT_DIR, tmp / TEXT_DIR)
    if len(speakers):
        speakers.save(tmp)
    if evaluation:
        (tmp / "eval.json").write_text(json.dumps(evaluation, indent=1))
    card = model_card(out.name, ckpt, (tmp / CONFIG_FILE).read_text(), json.loads((ckpt / META_FILE).read_text()),
                      _run_facts(ckpt), evaluation, note, corpus=str(cfg.data.corpus))  # fmt: skip
    (tmp / "README.md").write_text(card)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def shipped_size(path: str | Path) -> int:
    """Bytes of every file in a shipped folder."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())

