"""The study runner: ``speechlm study CONFIG --out DIR [--cells a,b]`` (the study's §4 and Appendices E-F).

A study is a grid of *cells* trained under one fair budget -- the same corpus, number of steps,
backbone and seed set; a cell changes only what its tables compare (tokenizer, g, speaker
awareness, fusion/head, modelled streams, FWI/CWI, training stage). Each (cell, seed) runs:

    train (speechlm.train.loop.train; codes are tokenised once and cached per tokenizer)
    -> generate on the test split + judge (speechlm.eval.evaluate)
    -> [alignment of hidden states, Table 4 / Figure 5] (speechlm.eval.model_alignment)
    -> DIR/cells/<cell>/seed<k>.json

**Resuming.** A (cell, seed) whose results JSON exists is skipped, and a training run that stopped
midway continues from its newest checkpoint, so a grid can be stopped and restarted, or split across
runs and machines with ``--cells`` and the JSON files gathered into one DIR. The report
(``report.md``, ``report.json``, plots; :mod:`speechlm.eval.study_report`) is rebuilt from whatever
results exist, and names the cells that have not run yet. A stage-2 cell starts from its stage-1
cell's checkpoint under ``runs_dir``; when that is missing (the stage-1 result was gathered from
another machine) the stage-1 training is run again with the same overrides and seed, and the stage-2
result records both the rebuilt and the recorded stage-1 losses (``init_from``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechlm import config as cfglib
from speechlm.eval.evaluate import KINDS, Kind, no_judges
from speechlm.eval.judges import Judges, JudgesConfig, build_judges
from speechlm.eval.study_findings import Claim
from speechlm.inference.generate import GenerationConfig

TABLES = ("t1", "t2", "t3", "t4", "t6", "t7", "t8", "t9")  # the study's table numbers (Table 5 is `codec eval`)


@dataclass(frozen=True)
class EvalSpec:
    """How each cell is evaluated after training."""

    split: str = "test"
    kinds: tuple[Kind, ...] = ("tts",)  # tts (Tables 1/2/6-9); qa (Table 3, stage-2 cells)
    limit: int = 0  # rows of each kind, of each domain for QA (0 = all)
    batch_size: int = 8
    judges: JudgesConfig | None = field(default_factory=JudgesConfig)  # null: SR, RTF and EM/F1 only (smoke runs)
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # greedy + penalty 1.2 (App. C)

    def __post_init__(self) -> None:
        if not self.kinds or any(k not in KINDS for k in self.kinds):
            raise ValueError(f"eval.kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        if self.limit < 0 or self.batch_size < 1:
            raise ValueError(f"eval.limit must be >= 0 and eval.batch_size >= 1, got {self.limit}, {self.batch_size}")


@dataclass(frozen=True)
class CellSpec:
    """One row of the grid: a base training config plus what this cell changes."""

    name: str  # unique; folder and table key
    config: Path  # base training config (configs/slm/*.yaml)
    label: str = ""  # row label in the tables (default: name)
    tokenizer: str = ""  # a tokenizer folder (`codec train`/`codec ship`) or a codec YAML (random init); "" = the config's
    overrides: tuple[str, ...] = ()  # a.b=c on top of the config (layout.group_size=12 ...)
    seeds: tuple[int, ...] = ()  # () = the study's seeds
    steps: int = 0  # 0 = the study's budget; stage-2 cells may set their own (App. C: 40k + 12k)
    init_from: str = ""  # stage 2: the stage-1 cell (same seed) whose final checkpoint starts this one
    tables: tuple[str, ...] = ()  # which tables show this cell (TABLES)
    align: bool = False  # Table 4 / Figure 5: alignment metrics + UMAP of the hidden states
    eval: EvalSpec | None = None  # None = the study's eval

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"cell name {self.name!r} must be a plain folder name")
        unknown = [t for t in self.tables if t not in TABLES]
        if unknown:
            raise ValueError(f"cell {self.name!r}: unknown table tag(s) {unknown}; choose from {TABLES}")
        if self.steps < 0:
            raise ValueError(f"cell {self.name!r}: steps must be >= 0, got {self.steps}")


@dataclass(frozen=True)
class StudyConfig:
    """A whole grid (YAML maps 1:1; ``speechlm study CONFIG --out DIR``)."""

    name: str
    corpus: Path  # every cell trains and is evaluated on this corpus
    steps: int  # the fair budget: optimizer steps of every stage-1 cell
    cells: tuple[CellSpec, ...]
    seeds: tuple[int, ...] = (0,)
    runs_dir: Path = Path("runs/study")  # checkpoints and generated audio (the results JSON go to --out)
    cache_dir: Path = Path("runs/cache/codes")  # shared code cache: a tokenizer is encoded once for all cells
    threads: int = 0  # torch CPU threads per cell (0 = all cores)
    device: str = "auto"
    eval: EvalSpec = field(default_factory=EvalSpec)
    claims: tuple[Claim, ...] = ()  # the study's claims as cell comparisons (speechlm.eval.study_findings)

    def __post_init__(self) -> None:
        if self.steps < 1 or not self.seeds or not self.cells:
            raise ValueError(f"a study needs steps >= 1, seeds and cells (got steps={self.steps}, seeds={self.seeds})")
        names = [c.name for c in self.cells]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"cell names must be unique; repeated: {dupes}")
        order = {n: i for i, n in enumerate(names)}
        for cell in self.cells:
            if cell.init_from and order.get(cell.init_from, math.inf) >= order[cell.name]:
                raise ValueError(f"cell {cell.name!r}: init_from {cell.init_from!r} must name an earlier cell")
        for claim in self.claims:
            for comp in claim.comparisons:
                for name in (comp.cell, comp.against):
                    if name not in order:
                        raise ValueError(f"claim {claim.id!r} compares cell {name!r}, which is not in the study")

    def cell(self, name: str) -> CellSpec:
        for cell in self.cells:
            if cell.name == name:
                return cell
        raise ValueError(f"no cell {name!r} in study {self.name!r}; cells: {', '.join(c.name for c in self.cells)}")

    def seeds_of(self, cell: CellSpec) -> tuple[int, ...]:
        return cell.seeds or self.seeds


def load_study(path: str | Path, overrides: Sequence[str] = ()) -> StudyConfig:
    return cfglib.load(StudyConfig, path, overrides)


# ---------------------------------------------------------------------------------------------
# Paths and resume logic
# ---------------------------------------------------------------------------------------------


def result_path(out: Path, cell: str, seed: int) -> Path:
    return out / "cells" / cell / f"seed{seed}.json"


def run_dir(study: StudyConfig, cell: str, seed: int) -> Path:
    return study.runs_dir / study.name / cell / f"seed{seed}"


def pending(
    study: StudyConfig, out: Path, only: Sequence[str] = (), seeds: Sequence[int] = ()
) -> list[tuple[CellSpec, int]]:
    """(cell, seed) pairs still to run, in grid order; ``only`` restricts to named cells and ``seeds``
    to those seeds (e.g. every cell's first seed now, the headline rows' extra seeds on another run).

    A stage-2 cell pulls in its stage-1 cell when that has no result yet and is not selected.
    """
    for name in only:
        study.cell(name)  # unknown names are an error, not a silent no-op
    wanted = set(only) if only else {c.name for c in study.cells}
    for cell in reversed(study.cells):  # close over init_from chains
        if cell.name in wanted and cell.init_from:
            wanted.add(cell.init_from)
    todo = []
    for cell in study.cells:
        if cell.name not in wanted:
            continue
        todo += [
            (cell, s)
            for s in study.seeds_of(cell)
            if (not seeds or s in seeds) and not result_path(out, cell.name, s).is_file()
        ]
    return todo


def read_results(study: StudyConfig, out: Path) -> list[dict[str, Any]]:
    """Every finished (cell, seed) result of the grid, in grid order."""
    results = []
    for cell in study.cells:
        for seed in study.seeds_of(cell):
            path = result_path(out, cell.name, seed)
            if path.is_file():
                results.append(json.loads(path.read_text()))
    return results


def write_result(out: Path, result: dict[str, Any]) -> Path:
    path = result_path(out, result["cell"], result["seed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)  # atomic: a killed run never leaves a half result that would be skipped
    return path


CellRunner = Callable[[StudyConfig, CellSpec, int, Path], dict[str, Any]]


def run_study(
    study: StudyConfig,
    out: Path,
    only: Sequence[str] = (),
    runner: CellRunner | None = None,
    seeds: Sequence[int] = (),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every pending (cell, seed), then rebuild the report from all results in ``out``."""
    from speechlm.eval.study_report import write_report

    runner = runner or run_cell
    todo = pending(study, out, only, seeds)
    log(f"study {study.name!r}: {len(todo)} run(s) to do -> {out}")
    for i, (cell, seed) in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] cell {cell.name} seed {seed}")
        start = time.perf_counter()
        result = runner(study, cell, seed, out)
        result.update(cell=cell.name, seed=seed, wall_seconds=time.perf_counter() - start)
        write_result(out, result)
    return write_report(study, out)


def finished_results(
    study: StudyConfig, out: Path, only: Sequence[str] = (), seeds: Sequence[int] = ()
) -> Iterator[tuple[CellSpec, dict[str, Any]]]:
    """``(cell, result)`` of every finished run in ``out``, restricted to cells ``only`` and ``seeds``
    when given (unknown cell names are errors)."""
    for name in only:
        study.cell(name)
    for result in read_results(study, out):
        cell = study.cell(result["cell"])
        if (not only or cell.name in only) and (not seeds or result["seed"] in seeds):
            yield cell, result


def rejudge_study(
    study: StudyConfig, out: Path, only: Sequence[str] = (), seeds: Sequence[int] = (), log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Re-score every finished (cell, seed) in ``out`` with the study's current judges (e.g. after a judge
    was improved), from the wavs the evaluations kept under ``runs_dir``; then rebuild the report."""
    from speechlm.eval.study_cell import rejudge_cell
    from speechlm.eval.study_report import write_report

    judges: dict[str, Judges] = {}  # one build per distinct judges config
    for cell, result in finished_results(study, out, only, seeds):
        spec = cell.eval or study.eval
        if spec.judges is None:
            continue
        key = json.dumps(cfglib.to_dict(spec.judges), sort_keys=True, default=str)
        if key not in judges:
            judges[key] = judges_for(study, spec)
        log(f"rejudge {cell.name} seed {result['seed']}")
        write_result(out, rejudge_cell(study, result, judges[key]))
    return write_report(study, out)


def text_gain_study(
    study: StudyConfig, out: Path, only: Sequence[str] = (), seeds: Sequence[int] = (), log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Add the text gain (:mod:`speechlm.eval.text_gain`) to finished (cell, seed) results that lack it,
    from their checkpoints under ``runs_dir`` (results from before the gain was measured); then rebuild
    the report. Results that have it are left alone."""
    from speechlm.eval.study_cell import with_text_gain
    from speechlm.eval.study_report import write_report

    for cell, result in finished_results(study, out, only, seeds):
        if "text_gain" in result:
            continue
        log(f"text gain {cell.name} seed {result['seed']}")
        write_result(out, with_text_gain(study, cell, result))
    return write_report(study, out)


# ---------------------------------------------------------------------------------------------
# One cell
# ---------------------------------------------------------------------------------------------


def cell_overrides(study: StudyConfig, cell: CellSpec, seed: int) -> list[str]:
    """The base config's overrides that make this (cell, seed) run under the study's fair budget."""
    over = [
        f"data.corpus={study.corpus}",
        f"data.cache_dir={study.cache_dir}",
        f"train.out_dir={run_dir(study, cell.name, seed)}",
        f"train.max_steps={cell.steps or study.steps}",
        f"train.seed={seed}",
        f"train.threads={study.threads}",
        f"train.device={study.device}",
        "train.tensorboard=false",
    ]
    if cell.tokenizer:
        # A codec YAML builds a random-init tokenizer (smoke runs); anything else is a trained tokenizer's folder,
        # which need not exist yet when the grid is written (codecs ship separately; training checks it).
        is_yaml = Path(cell.tokenizer).suffix in (".yaml", ".yml")
        kind, other = ("config", "checkpoint") if is_yaml else ("checkpoint", "config")
        over += [f"tokenizer.{kind}={cell.tokenizer}", f"tokenizer.{other}=null"]
    if cell.init_from:
        over.append(f"train.init_from={run_dir(study, cell.init_from, seed)}")
    return [*over, *cell.overrides]  # the cell's own overrides win


def run_cell(study: StudyConfig, cell: CellSpec, seed: int, out: Path) -> dict[str, Any]:
    """Train, evaluate (and analyse) one (cell, seed); returns its results record."""
    from speechlm.eval.study_cell import evaluate_cell, train_cell

    stage_one = train_cell(study, study.cell(cell.init_from), seed) if cell.init_from else None
    trained = train_cell(study, cell, seed)
    result = evaluate_cell(study, cell, seed, trained, out)
    if stage_one is not None:
        result["init_from"] = stage_one_record(out, cell.init_from, seed, stage_one.summary)
    return result


def stage_one_record(out: Path, name: str, seed: int, summary: dict[str, Any]) -> dict[str, Any]:
    """Which stage-1 run a stage-2 cell started from, with its losses next to those its results
    JSON recorded: equal when the checkpoint is the one the grid evaluated; when it was rebuilt on
    another machine they show how closely the rebuild reproduced it."""
    recorded_file = result_path(out, name, seed)
    recorded = json.loads(recorded_file.read_text())["train"] if recorded_file.is_file() else {}
    return {
        "cell": name,
        "checkpoint": summary["checkpoint"],
        "loss": summary["loss"],
        "val_loss": summary["val_loss"],
        "recorded_loss": recorded.get("loss"),
        "recorded_val_loss": recorded.get("val_loss"),
    }


def judges_for(study: StudyConfig, spec: EvalSpec) -> Judges:
    return build_judges(spec.judges, study.corpus) if spec.judges is not None else no_judges()

