"""Markdown tables for evaluation results: one formatter, so every report reads the same.

Numbers are printed with a fixed precision per kind of figure; absent figures (``None``) print
as an em dash, never as 0, mirroring the JSON's ``null``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Figures that are rates are printed as percentages (the study's tables do the same for WER).
PERCENT_KEYS = frozenset({"wer", "cer", "success_rate", "em", "f1", "eer", "wer_clean", "wer_reversed", "wer_shuffled"})


def format_value(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{100 * value:.1f}%" if key in PERCENT_KEYS or key.startswith("wer_") else f"{value:.3f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (dicts); ``columns`` picks and orders the keys."""
    if not rows:
        return "_(no rows)_\n"
    columns = list(columns) if columns is not None else list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format_value(c, row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


SUMMARY_COLUMNS = (
    "n_items", "success_rate", "wer", "sim_seen", "sim_unseen", "mos", "mos_judge", "rtf", "em", "f1",
)


def summary_table(summary: Mapping[str, Any], title: str = "") -> str:
    """The evaluation summary as a one-row table, plus which judges produced it."""
    cols = [c for c in SUMMARY_COLUMNS if c in summary]
    out = f"### {title}\n\n" if title else ""
    out += markdown_table([summary], cols)
    judges = ", ".join(f"{k}={summary[k]}" for k in ("asr_judge", "sim_judge", "mos_judge") if summary.get(k))
    if judges:
        out += f"\nJudges: {judges}.\n"
    failures = summary.get("failures") or {}
    if failures:
        out += "Failures: " + ", ".join(f"{k} ×{v}" for k, v in failures.items()) + ".\n"
    return out


def write_json(obj: Mapping[str, Any], path: str | Path) -> Path:
    """Write a report as indented JSON, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
