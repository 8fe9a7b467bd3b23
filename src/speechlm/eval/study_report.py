"""The study report: tables that mirror the paper's, built from the per-(cell, seed) results JSON.

Every table is a list of columns over the cells tagged for it (``CellSpec.tables``). A numeric
figure is the mean over the cell's seeds, shown as ``mean ± std (n)`` when n > 1, so headline rows
(3 seeds) show their spread and single-seed rows say so. A figure nobody measured prints ``n/a``;
a cell without results is listed under "not run yet". MOS columns carry the judge's name (DNSMOS by
default, never "UTMOS").

Tables (study numbering): 1 tokenizers x NTP; 2 NTP/MTP x speaker-aware; 9 tokenizer x compression;
4 cross-modal alignment of the last layer; 6 MTP fusion x head; 7 modelled streams; 8 FWI vs CWI;
3 stage-2 role-QA (EM/F1 in/out of domain, SIM of seen/unseen roles) against a text-only model.
Plots: training-loss curves (Figure 4) and the cells' UMAP panels (Figure 5).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechlm import config as cfglib
from speechlm.eval.study import StudyConfig, pending, read_results
from speechlm.eval.study_findings import evaluate_claims, markdown_findings

Result = dict[str, Any]
Getter = Callable[[Result], Any]


@dataclass(frozen=True)
class Column:
    header: str
    get: Getter  # one result (one seed) -> a number, a string, or None
    digits: int = 3
    fact: bool = False  # a property of the cell's setup (token rate, g, ...): the same for every seed, no spread


@dataclass(frozen=True)
class Table:
    tag: str
    title: str
    caption: str
    columns: tuple[Column, ...]


# -- getters ------------------------------------------------------------------------------------


def _fact(key: str) -> Getter:
    return lambda r: r["facts"].get(key)


def _eval(key: str) -> Getter:
    return lambda r: r["eval"].get(key)


def _item_mean(key: str, **where: Any) -> Getter:
    """Mean of an item field over the items matching ``where`` (e.g. kind="qa", domain="in", seen=True)."""

    def get(r: Result) -> float | None:
        vals = [i[key] for i in r["items"] if i.get(key) is not None and all(i.get(k) == v for k, v in where.items())]
        return statistics.fmean(vals) if vals else None

    return get


def _last_layer(key: str) -> Getter:
    def get(r: Result) -> float | None:
        if not r.get("align"):
            return None
        layers = r["align"]["layers"]
        return layers[max(layers, key=int)][key]  # Table 4 is "calculated on the hidden states of the last layer"

    return get


def _model_type(r: Result) -> str:
    return "LLM (text only)" if r["facts"]["tasks"] == ["text"] else "SLM"


LABEL = Column("Model", lambda r: r["label"])
SR = Column("SR", _eval("success_rate"), 2)
WER = Column("WER", _eval("wer"))
SIM = Column("SIM", _item_mean("sim"))
SIM_SEEN = Column("SIM seen", _eval("sim_seen"))
SIM_UNSEEN = Column("SIM unseen", _eval("sim_unseen"))
TEXT_GAIN = Column("text gain", lambda r: (r.get("text_gain") or {}).get("gain"))  # eval.text_gain, nats/token


def tables(mos_judge: str) -> tuple[Table, ...]:
    mos = Column(f"MOS ({mos_judge})", _eval("mos"), 2)
    return (
        Table("t1", "Table 1: tokenizers trained with the SLM (NTP)",
              "Coupled vs semi-decoupled vs decoupled tokenizers under one budget; SIM on seen (train) and unseen voices.",
              (LABEL, Column("Coupling", _fact("coupling"), fact=True), Column("Codebook", _fact("codebook_size"), fact=True),
               Column("Nq", _fact("nq"), fact=True), Column("TPS", _fact("token_rate"), 0, fact=True), SR, mos, WER, TEXT_GAIN, SIM_SEEN, SIM_UNSEEN)),
        Table("t2", "Tables 1/2: NTP vs MTP and speaker-aware generation",
              "H = speech tokens per LM step (g); steps/s = LM decoding steps per second of audio; RTF = measured "
              "generation time (LM + codec decode) per second of generated audio on the study's machine.",
              (LABEL, Column("H", _fact("group_size"), fact=True), Column("TPS", _fact("token_rate"), 0, fact=True),
               Column("steps/s audio", _fact("steps_per_audio_second"), 1, fact=True), Column("Spk-aware", _fact("speaker_aware"), fact=True),
               Column("RTF", _eval("rtf"), 2), SR, mos, WER, TEXT_GAIN, SIM_SEEN, SIM_UNSEEN)),
        Table("t9", "Table 9: tokenizer x compression ratio (MTP)", "CR = g, speech tokens per LM step.",
              (LABEL, Column("Coupling", _fact("coupling"), fact=True), Column("CR", _fact("group_size"), fact=True), SR, mos, WER, TEXT_GAIN, SIM)),
        Table("t4", "Table 4: cross-modal alignment (last layer)",
              "Teacher-forced hidden states of test TTS sequences (speechlm.eval.alignment); Dist on unit-normalised states.",
              (LABEL, Column("H", _fact("group_size"), fact=True), Column("TPS", _fact("token_rate"), 0, fact=True),
               *(Column(h, _last_layer(k)) for h, k in (("TTSim", "tt_sim"), ("SSSim", "ss_sim"), ("STSim", "st_sim"),
                                                       ("TTDist", "tt_dist"), ("SSDist", "ss_dist"), ("STDist", "st_dist"))),
               Column("Riemannian", _last_layer("riemannian"), 2))),
        Table("t6", "Table 6: MTP fusion x speech head", "Appendix E.1.",
              (LABEL, Column("Fusion", _fact("fusion"), fact=True), Column("Head", _fact("head"), fact=True), mos, WER, TEXT_GAIN, SIM)),
        Table("t7", "Table 7: number of modelled streams (NTP)", "Appendix E.2.",
              (LABEL, Column("Nq", _fact("nq"), fact=True), Column("Form", _fact("order"), fact=True), SR, mos, WER, TEXT_GAIN, SIM)),
        Table("t8", "Table 8: token organisation, FWI vs CWI (NTP)", "Appendix E.3.",
              (LABEL, Column("Nq", _fact("nq"), fact=True), Column("Form", _fact("order"), fact=True), SR, mos, WER, TEXT_GAIN, SIM)),
        Table("t3", "Table 3: role-playing spoken QA (stage 2)",
              "EM/F1 (%) of the text answer; SIM of the spoken answer for seen / unseen roles; in-domain vs held-out categories.",
              (LABEL, Column("Type", _model_type), Column("Tokenizer", _fact("coupling"), fact=True),
               *(col for dom in ("in", "out") for col in (
                   Column(f"EM {dom}", _scaled(_item_mean("em", domain=dom)), 1),
                   Column(f"F1 {dom}", _scaled(_item_mean("f1", domain=dom)), 1),
                   Column(f"SIM seen {dom}", _item_mean("sim", domain=dom, seen=True)),
                   Column(f"SIM unseen {dom}", _item_mean("sim", domain=dom, seen=False)))))),
    )  # fmt: skip


def _scaled(get: Getter, factor: float = 100.0) -> Getter:
    return lambda r: None if (v := get(r)) is None else v * factor


# -- assembly -----------------------------------------------------------------------------------


def cell_value(results: Sequence[Result], column: Column) -> dict[str, Any]:
    """One table cell over a cell's seeds: ``{"mean", "std", "n"}`` for numbers, ``{"value"}`` otherwise."""
    values = [column.get(r) for r in results]
    if column.fact:
        return {"value": next((v for v in values if v is not None), None)}
    numbers = [v for v in values if isinstance(v, float)]  # ints (Nq, g, codebook size) are facts, not measurements
    if numbers and len(numbers) == len([v for v in values if v is not None]):
        std = statistics.stdev(numbers) if len(numbers) > 1 else None
        return {"mean": statistics.fmean(numbers), "std": std, "n": len(numbers)}
    present = [v for v in values if v is not None]
    return {"value": present[0] if present else None}


def format_value(v: dict[str, Any], digits: int) -> str:
    if "value" in v:
        value = v["value"]
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return "n/a" if value is None else ("yes" if value is True else "no" if value is False else str(value))
    text = f"{v['mean']:.{digits}f}"
    return text if v["std"] is None else f"{text} ± {v['std']:.{digits}f} ({v['n']})"


def build_tables(study: StudyConfig, results: Sequence[Result]) -> dict[str, Any]:
    """``{tag: {"title", "caption", "columns", "rows": [{"cell", "seeds", "values": [...]}]}}`` for non-empty tables."""
    by_cell: dict[str, list[Result]] = {}
    for r in results:
        by_cell.setdefault(r["cell"], []).append(r)
    judge = next((r["eval"].get("mos_judge") for r in results if r["eval"].get("mos_judge")), None) or "no judge"
    out: dict[str, Any] = {}
    for table in tables(judge):
        cells = [c for c in study.cells if table.tag in c.tables and c.name in by_cell]
        if not cells:
            continue
        rows = []
        for cell in cells:
            rs = by_cell[cell.name]
            rows.append({"cell": cell.name, "seeds": [r["seed"] for r in rs], "values": [cell_value(rs, c) for c in table.columns]})
        out[table.tag] = {"title": table.title, "caption": table.caption, "columns": [c.header for c in table.columns],
                          "digits": [c.digits for c in table.columns], "rows": rows}  # fmt: skip
    return out


def markdown_table(table: dict[str, Any]) -> str:
    header = [*table["columns"], "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table["rows"]:
        cells = [format_value(v, d) for v, d in zip(row["values"], table["digits"])]
        lines.append("| " + " | ".join([*cells, ",".join(map(str, row["seeds"]))]) + " |")
    return "\n".join(lines)


def write_report(study: StudyConfig, out: Path) -> dict[str, Any]:
    """Rebuild ``report.json``, ``report.md`` and the loss-curve plot from the results in ``out``."""
    results = read_results(study, out)
    built = build_tables(study, results)
    missing = [f"{cell.name}/seed{seed}" for cell, seed in pending(study, out)]
    plots = []
    if results:
        plots.append(plot_loss_curves(study, results, out / "loss_curves.png").name)
    umaps = sorted(str(p.relative_to(out)) for p in (out / "cells").glob("*/umap_seed*.png")) if (out / "cells").is_dir() else []
    report = {"study": study.name, "config": cfglib.to_dict(study), "runs": len(results), "missing": missing,
              "tables": built, "findings": evaluate_claims(study.claims, results), "plots": plots, "umap": umaps}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(render_markdown(study, report, results))
    return report


def render_markdown(study: StudyConfig, report: dict[str, Any], results: Sequence[Result]) -> str:
    seconds = sum(r.get("wall_seconds", 0.0) for r in results)
    lines = [
        f"# Study `{study.name}`",
        "",
        f"Corpus `{study.corpus}`; every stage-1 cell trains {study.steps} steps; seeds {list(study.seeds)} unless a row "
        f"says otherwise (`± std (n)` = spread over n seeds; no `±` = one seed). {len(results)} runs, "
        f"{seconds / 60:.1f} min of wall time in total. Figures are re-measured here, never copied from the paper.",
        "",
        "*text gain* (speechlm.eval.text_gain): how much the model's speech uses its text -- the teacher-forced "
        "speech NLL of each test utterance after another sentence minus after its own (nats per speech token; "
        "0 = the text is ignored). It separates models whose judge WER is saturated near 100%.",
        "",
    ]
    if report["findings"]:
        lines += ["## Findings: the study's claims", "",
                  "Each claim is tested as comparisons between cells (speechlm.eval.study_findings): item metrics are "
                  "paired by test item, with a 95% paired-bootstrap interval of the difference (favoured - against); "
                  "alignment figures have one value per seed and get a direction only.", "",
                  markdown_findings(report["findings"]), ""]  # fmt: skip
    for table in report["tables"].values():
        lines += [f"## {table['title']}", "", table["caption"], "", markdown_table(table), ""]
    if results:
        lines += ["## Runs", "", "What each (cell, seed) cost on the machine that ran it (training loop's own figures).", "",
                  runs_table(results), ""]  # fmt: skip
    if report["plots"] or report["umap"]:
        lines += ["## Plots", ""]
        lines += [f"![training loss (Figure 4)]({p})" for p in report["plots"]]
        lines += [f"![UMAP of text/speech hidden states (Figure 5)]({p})" for p in report["umap"]]
        lines.append("")
    if report["missing"]:
        lines += ["## Not run yet", "", ", ".join(report["missing"]), ""]
    return "\n".join(lines)


def runs_table(results: Sequence[Result]) -> str:
    """Steps, training time, step time, LM positions/s, final train/val loss and wall time per run."""
    lines = ["| cell | seed | steps | train s | s/step | positions/s | loss | val loss | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r["train"]
        val = "n/a" if t.get("val_loss") is None else f"{t['val_loss']:.3f}"
        lines.append(f"| {r['cell']} | {r['seed']} | {t['steps']} | {t['train_seconds']:.0f} | {t['step_seconds']:.2f} | "
                     f"{t['positions_per_s']:.0f} | {t['loss']:.3f} | {val} | {r.get('wall_seconds', 0.0):.0f} |")  # fmt: skip
    return "\n".join(lines)


def plot_loss_curves(study: StudyConfig, results: Sequence[Result], path: Path) -> Path:
    """Figure 4: training loss against step, one colour per cell (every seed drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = [c.name for c in study.cells]
    for r in results:
        if not r.get("loss_curve"):
            continue
        steps, losses = zip(*r["loss_curve"])
        first = r["seed"] == min(s["seed"] for s in results if s["cell"] == r["cell"])
        colour = colours[names.index(r["cell"]) % len(colours)]
        ax.plot(steps, losses, color=colour, alpha=0.8, lw=1.2, label=r["label"] if first else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (weighted text + speech)")
    ax.set_title(f"{study.name}: training loss per cell (Figure 4)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
