"""Shipping a trained tokenizer: ``speechlm codec ship RUN/checkpoint --eval EVAL.json --out DIR``.

A shipped checkpoint is what ``registry.load_tokenizer`` reads — ``model.safetensors`` (fp16, or
fp16 with an int8 decoder, ``storage.py``: small enough for the repository) and ``config.yaml`` —
plus a model card ``README.md`` that says how it was trained (the resolved training config and its
log) and what it measured (the ``codec eval`` summary), so a figure in docs/RESULTS.md can always be
traced to its checkpoint.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechlm.tokenizers.registry import WEIGHTS_FILE, load_tokenizer, save_tokenizer
from speechlm.tokenizers.storage import Storage


@dataclass(frozen=True)
class RepackResult:
    """What ``repack`` changed: file size and ``data.codes.tokenizer_fingerprint``."""

    bytes_before: int
    bytes_after: int
    fingerprint_before: str
    fingerprint_after: str


SUMMARY_ROWS = (
    ("stoi", "STOI"),
    ("pesq", "PESQ (wb)"),
    ("wer", "WER, ASR judge on resynthesis"),
    ("wer_ground_truth", "WER, same judge on the original audio"),
    ("sim", "speaker SIM (original vs resynthesis)"),
    ("mos", "MOS of resynthesis"),
    ("mos_ground_truth", "MOS of the original audio"),
    ("rtf", "encode+decode real-time factor"),
    ("token_rate", "token rate (tokens/s)"),
    ("bitrate", "bitrate (bits/s)"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _training_facts(ckpt: Path) -> dict[str, Any]:
    """Steps and training seconds (``state.json``) and the last validation loss (``RUN/log.jsonl``)."""
    state_file, log = ckpt / "state.json", ckpt.parent / "log.jsonl"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    last_val = next((r for r in reversed(rows) if "val_loss" in r), {})
    return {"steps": state.get("step"), "seconds": state.get("seconds"), "val_loss": last_val.get("val_loss")}


def model_card(
    name: str, describe: str, train_yaml: str, facts: dict[str, Any], evaluation: dict[str, Any], note: str = ""
) -> str:
    summary = evaluation.get("summary", {})
    lines = [
        f"# {name}",
        "",
        f"{describe}. Trained by speechlm (`speechlm codec train`); load with",
        "`speechlm.tokenizers.registry.load_tokenizer(this_folder)`.",
        "",
        *([note, ""] if note else []),
        "## Training",
        f"- steps: {_fmt(facts['steps'])}, wall time: {_fmt(facts['seconds'])} s, last validation loss: "
        f"{_fmt(facts['val_loss'])}",
        "- resolved training config:",
        "",
        "```yaml",
        train_yaml.rstrip(),
        "```",
        "",
        "## Resynthesis figures (`speechlm codec eval`)",
        f"- judges: ASR {_fmt(summary.get('asr_judge'))}, speaker {_fmt(summary.get('speaker_judge'))}, "
        f"MOS {_fmt(summary.get('mos_judge'))}; {_fmt(summary.get('items'))} test utterances, "
        f"{_fmt(summary.get('threads'))} torch threads",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| {label} | {_fmt(summary.get(key))} |" for key, label in SUMMARY_ROWS]
    if evaluation.get("command"):
        lines += ["", f"Measured with: `{evaluation['command']}`"]
    return "\n".join(lines) + "\n"


def ship_checkpoint(
    ckpt: Path, out: Path, eval_json: Path | None = None, note: str = "", storage: Storage = "fp16"
) -> Path:
    """Copy a training checkpoint as a shipped tokenizer (``storage`` weights, config, model card)."""
    tok = load_tokenizer(ckpt)
    assert tok.tokenizer_config is not None
    save_tokenizer(tok, out, storage=storage)
    train_yaml = (ckpt / "train_config.yaml").read_text() if (ckpt / "train_config.yaml").is_file() else ""
    evaluation: dict[str, Any] = {}
    if eval_json is not None:
        if not eval_json.is_file():
            raise FileNotFoundError(f"eval report not found: {eval_json}")
        evaluation = json.loads(eval_json.read_text())
        evaluation.pop("items", None)
        (out / "eval.json").write_text(json.dumps(evaluation, indent=2))
    facts = _training_facts(ckpt)
    card = model_card(tok.tokenizer_config.name, tok.describe(), train_yaml, facts, evaluation, note)
    (out / "README.md").write_text(card)
    return out


def repack(directory: Path, storage: Storage) -> RepackResult:
    """Rewrite a saved tokenizer's weights in ``storage`` in place (config and card untouched).

    Repacking cannot restore precision that a smaller storage already dropped (fp16 repacked as fp32
    holds the fp16 values). Changing the stored values changes the tokenizer's fingerprint, so SLMs
    trained on the old weights, and their code caches, no longer match it: the result says so.
    """
    from speechlm.data.codes import tokenizer_fingerprint

    weights = directory / WEIGHTS_FILE
    before = weights.stat().st_size if weights.is_file() else 0
    tok = load_tokenizer(directory)
    old = tokenizer_fingerprint(tok)
    with tempfile.TemporaryDirectory(dir=directory.parent) as tmp:
        save_tokenizer(tok, tmp, storage=storage)
        (Path(tmp) / WEIGHTS_FILE).replace(weights)
    return RepackResult(before, weights.stat().st_size, old, tokenizer_fingerprint(load_tokenizer(directory)))
