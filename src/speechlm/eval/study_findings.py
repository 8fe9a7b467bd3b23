"""The study's claims, tested on a grid's results: a verdict per claim with its evidence.

A study config lists its claims (``claims:``), each a set of pairwise comparisons between two cells
on one metric, e.g. "decoupled beats coupled on WER" = ``{metric: wer, better: lower,
cell: decoupled_ntp, against: coupled_rvq_ntp}``. Each comparison is judged on the evidence:

- **item metrics** (``wer``, ``text_gain``, ``sim``, ``success``, ``mos``, ``em``, ``f1``: one value per test item)
  are paired by item id (both cells are evaluated on the same test rows; a cell's seeds are averaged
  per item), and the mean difference ``cell - against`` gets a 95% paired-bootstrap interval. The
  comparison *reproduces* the claim when the whole interval lies on the claimed side of 0, is
  *contradicted* when it lies on the other side, and is *inconclusive* otherwise;
- **cell metrics** (the last layer's alignment figures of Table 4, ``rtf``) have one value per seed,
  so there is no item-level noise estimate: the verdict says only whether the direction is
  *consistent* or *opposite*;
- ``better: not_worse`` is a non-inferiority test (claim 7, "keeps the backbone's knowledge"): the
  interval's worse end may not pass ``margin``;
- ``text_gain`` (:mod:`speechlm.eval.text_gain`, nats per speech token that the text is worth to the
  model, teacher-forced) stands in for WER where WER is saturated: it is measured on every test item
  whether or not generation succeeded, and is never at a floor;
- a comparison is *not measurable* when the metric is at its floor in both cells -- WER >= 90% in both
  (neither model is intelligible, so which is "better" is noise), or EM/F1 = 0 in the reference cell
  (the backbone knows nothing to keep) -- and *not run* while a cell has no results.

A claim is *reproduced* when every measurable comparison supports it, *contradicted* when every one
goes against it, and *mixed* / *inconclusive* / *not measurable* / *not run* otherwise.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Result = dict[str, Any]
Metric = Literal["wer", "text_gain", "sim", "success", "mos", "em", "f1", "st_sim", "tt_sim", "ss_sim", "riemannian", "st_dist", "rtf"]
ITEM_METRICS = frozenset({"wer", "text_gain", "sim", "success", "mos", "em", "f1"})
ALIGN_METRICS = frozenset({"st_sim", "tt_sim", "ss_sim", "riemannian", "st_dist"})
WER_FLOOR = 0.9  # both cells at or above: unintelligible, not comparable
BOOTSTRAP = 2000


@dataclass(frozen=True)
class Comparison:
    """``cell`` is the arm the claim favours; ``against`` the other."""

    metric: Metric
    better: Literal["lower", "higher", "not_worse"]
    cell: str
    against: str
    higher_is_better: bool = True  # only for better=not_worse: the metric's own sense (EM/F1/SIM: true)
    margin: float = 0.05  # only for better=not_worse: the largest tolerated loss, in the metric's units

    def __post_init__(self) -> None:
        if self.metric not in ITEM_METRICS | ALIGN_METRICS | {"rtf"}:
            raise ValueError(f"unknown claim metric {self.metric!r}")
        if self.better not in ("lower", "higher", "not_worse"):
            raise ValueError(f"better must be lower, higher or not_worse, got {self.better!r}")
        if self.cell == self.against:
            raise ValueError(f"a comparison needs two different cells, got {self.cell!r} twice")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")


@dataclass(frozen=True)
class Claim:
    id: str  # the study's numbering, e.g. "1"
    text: str
    comparisons: tuple[Comparison, ...]

    def __post_init__(self) -> None:
        if not self.comparisons:
            raise ValueError(f"claim {self.id!r} has no comparisons")


# -- evidence ------------------------------------------------------------------------------------


def item_values(results: Sequence[Result], metric: str) -> dict[str, float]:
    """``{item id: value}`` over a cell's seeds (mean per id); items without the metric are left out."""
    per_id: dict[str, list[float]] = {}
    for r in results:
        for item in r["items"]:
            value = item.get(metric)
            if value is not None:
                per_id.setdefault(item["id"], []).append(float(value))
    return {i: statistics.fmean(v) for i, v in per_id.items()}


def cell_values(results: Sequence[Result], metric: str) -> list[float]:
    """One value per seed of a cell-level metric (last-layer alignment, or RTF)."""
    values = []
    for r in results:
        if metric == "rtf":
            v = r["eval"].get("rtf")
        else:
            layers = (r.get("align") or {}).get("layers") or {}
            v = layers[max(layers, key=int)][metric] if layers else None
        if v is not None:
            values.append(float(v))
    return values


def paired_bootstrap(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired items and its 95% percentile-bootstrap interval."""
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(BOOTSTRAP, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def judge(comp: Comparison, by_cell: dict[str, list[Result]]) -> dict[str, Any]:
    """The evidence and verdict of one comparison (see the module docstring)."""
    row: dict[str, Any] = {"metric": comp.metric, "better": comp.better, "cell": comp.cell, "against": comp.against}
    if comp.cell not in by_cell or comp.against not in by_cell:
        return {**row, "verdict": "not run"}
    if comp.metric not in ITEM_METRICS:
        a, b = cell_values(by_cell[comp.cell], comp.metric), cell_values(by_cell[comp.against], comp.metric)
        if not a or not b:
            return {**row, "verdict": "not run"}
        ma, mb = statistics.fmean(a), statistics.fmean(b)
        row.update(value=ma, value_against=mb, diff=ma - mb, seeds=(len(a), len(b)))
        return {**row, "verdict": "consistent" if _on_claimed_side(comp, ma - mb, ma - mb) == 1 else "opposite"}
    va, vb = item_values(by_cell[comp.cell], comp.metric), item_values(by_cell[comp.against], comp.metric)
    shared = sorted(va.keys() & vb.keys())
    if not shared:  # e.g. WER is scored on successful items only, and one cell has none
        return {**row, "verdict": "not measurable", "n": 0, "why": f"no test item has a {comp.metric} in both cells"}
    a, b = np.array([va[i] for i in shared]), np.array([vb[i] for i in shared])
    diff, low, high = paired_bootstrap(a, b)
    row.update(value=float(a.mean()), value_against=float(b.mean()), diff=diff, ci=(low, high), n=len(shared))
    if comp.metric == "wer" and min(a.mean(), b.mean()) >= WER_FLOOR:
        return {**row, "verdict": "not measurable", "why": f"WER >= {WER_FLOOR:.0%} in both cells"}
    if comp.metric in ("em", "f1") and b.mean() == 0.0 and comp.better == "not_worse":
        return {**row, "verdict": "not measurable", "why": f"{comp.metric.upper()} = 0 in {comp.against}: nothing to keep"}
    side = _on_claimed_side(comp, low, high)
    return {**row, "verdict": {1: "reproduced", -1: "contradicted", 0: "inconclusive"}[side]}


def _on_claimed_side(comp: Comparison, low: float, high: float) -> int:
    """+1 when the interval [low, high] of ``cell - against`` supports the claim, -1 when it refutes it, else 0."""
    if comp.better == "lower":
        return 1 if high < 0 else -1 if low > 0 else 0
    if comp.better == "higher":
        return 1 if low > 0 else -1 if high < 0 else 0
    worst, best = (low, high) if comp.higher_is_better else (-high, -low)  # in "higher is better" units
    return 1 if worst > -comp.margin else -1 if best < -comp.margin else 0


def claim_verdict(rows: Sequence[dict[str, Any]]) -> str:
    """One word for the claim, qualified by how much of it was measured ("reproduced (2 of 3 measured)")."""
    verdicts = [r["verdict"] for r in rows]
    measured = [v for v in verdicts if v not in ("not run", "not measurable")]
    if not measured:
        return "not run" if all(v == "not run" for v in verdicts) else "not measurable"
    support = sum(v in ("reproduced", "consistent") for v in measured)
    against = sum(v in ("contradicted", "opposite") for v in measured)
    word = (
        "reproduced" if support == len(measured)
        else "contradicted" if against == len(measured)
        else "mixed" if support or against
        else "inconclusive"
    )  # fmt: skip
    return word if len(measured) == len(verdicts) else f"{word} ({len(measured)} of {len(verdicts)} measured)"


def evaluate_claims(claims: Sequence[Claim], results: Sequence[Result]) -> list[dict[str, Any]]:
    """``[{"id", "text", "verdict", "comparisons": [...]}]`` for the report."""
    by_cell: dict[str, list[Result]] = {}
    for r in results:
        by_cell.setdefault(r["cell"], []).append(r)
    out = []
    for claim in claims:
        rows = [judge(c, by_cell) for c in claim.comparisons]
        out.append({"id": claim.id, "text": claim.text, "verdict": claim_verdict(rows), "comparisons": rows})
    return out


def markdown_findings(findings: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| claim | verdict | metric | cell (favoured) | against | value | against | diff [95% CI] | n | comparison |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in findings:
        for k, row in enumerate(f["comparisons"]):
            head = f"**{f['id']}**. {f['text']}" if k == 0 else ""
            verdict = f"**{f['verdict']}**" if k == 0 else ""
            value = _num(row.get("value"))
            other = _num(row.get("value_against"))
            diff = _num(row.get("diff"))
            if "ci" in row:
                diff += f" [{row['ci'][0]:+.3f}, {row['ci'][1]:+.3f}]"
            n = _count(row)
            note = row["verdict"] + (f" ({row['why']})" if "why" in row else "")
            lines.append(f"| {head} | {verdict} | {row['metric']} {row['better']} | {row['cell']} | {row['against']} "
                         f"| {value} | {other} | {diff} | {n} | {note} |")  # fmt: skip
    return "\n".join(lines)


def _count(row: dict[str, Any]) -> str:
    if "n" in row:
        return f"{row['n']} items"
    return "seeds " + "/".join(map(str, row["seeds"])) if "seeds" in row else ""


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
