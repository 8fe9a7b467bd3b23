"""The study runner: config validation, resume/skip logic, report assembly (fake results), a 2-cell micro-study."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from speechlm import config as cfglib
from speechlm.eval.study import (
    CellSpec,
    StudyConfig,
    cell_overrides,
    load_study,
    pending,
    read_results,
    result_path,
    run_dir,
    run_study,
)
from speechlm.eval.study_report import build_tables, format_value, write_report
from speechlm.train.config import load_train_config

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted((ROOT / "configs" / "study").glob("*.yaml"))


def _study(tmp: Path, cells: list[dict[str, Any]], **kw: Any) -> StudyConfig:
    data = {"name": "t", "corpus": str(tmp / "corpus"), "steps": 5, "runs_dir": str(tmp / "runs"), "cells": cells, **kw}
    return cfglib.from_dict(StudyConfig, data)


def _cell(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "config": "configs/slm/tiny_ntp.yaml", **kw}


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_study_configs_load_and_every_cell_config_resolves(path: Path):
    assert path.read_text().startswith("# speechlm study configs/study/")
    study = load_study(path)
    for cell in study.cells:
        # Tokenizer checkpoints may not be shipped yet; everything else must form a valid training config.
        over = [o for o in cell_overrides(study, cell, study.seeds_of(cell)[0]) if not o.startswith("tokenizer.")]
        cfg = load_train_config(ROOT / cell.config, over)
        assert cfg.train.max_steps == (cell.steps or study.steps)


def test_bad_study_configs_name_the_problem(tmp_path: Path):
    with pytest.raises(ValueError, match="unique"):
        _study(tmp_path, [_cell("a"), _cell("a")])
    with pytest.raises(ValueError, match="earlier cell"):
        _study(tmp_path, [_cell("b", init_from="a"), _cell("a")])
    with pytest.raises(ValueError, match="unknown table"):
        _study(tmp_path, [_cell("a", tables=["t5"])])
    with pytest.raises(ValueError, match="plain folder name"):
        CellSpec(name="a/b", config=Path("x.yaml"))
    with pytest.raises(ValueError, match="no cell 'zzz'"):
        pending(_study(tmp_path, [_cell("a")]), tmp_path / "out", only=["zzz"])


def test_cell_overrides_apply_the_fair_budget_and_the_tokenizer(tmp_path: Path):
    codec_dir = tmp_path / "codec"
    codec_dir.mkdir()
    study = _study(tmp_path, [_cell("s1", tokenizer=str(codec_dir)), _cell("s2", init_from="s1", steps=2,
                   tokenizer="configs/codec/tiny_decoupled.yaml", overrides=["train.max_steps=7"])])  # fmt: skip
    s1 = cell_overrides(study, study.cell("s1"), 3)
    assert f"tokenizer.checkpoint={codec_dir}" in s1 and "tokenizer.config=null" in s1
    assert "train.max_steps=5" in s1 and "train.seed=3" in s1 and f"train.out_dir={run_dir(study, 's1', 3)}" in s1
    s2 = cell_overrides(study, study.cell("s2"), 3)
    assert f"train.init_from={run_dir(study, 's1', 3)}" in s2 and "tokenizer.checkpoint=null" in s2
    assert s2[-1] == "train.max_steps=7"  # a cell's own overrides come last and win


def _fake_result(cell: str, seed: int, sr: float, wer: float | None, **facts: Any) -> dict[str, Any]:
    base = {"coupling": "decoupled", "codebook_size": 32, "nq": 3, "token_rate": 150.0, "group_size": 1,
            "steps_per_audio_second": 150.0, "speaker_aware": False, "fusion": "mlp", "head": "linear",
            "order": "fwi", "tasks": ["tts", "asr"]}  # fmt: skip
    items = [{"id": "q1", "kind": "qa", "domain": "in", "seen": True, "em": 1.0, "f1": 1.0, "sim": 0.5},
             {"id": "q2", "kind": "qa", "domain": "out", "seen": False, "em": 0.0, "f1": 0.5, "sim": None}]  # fmt: skip
    train = {"steps": 2, "train_seconds": 4.0, "step_seconds": 2.0, "positions_per_s": 100.0, "loss": 2.5, "val_loss": None}
    return {"label": cell.upper(), "facts": {**base, **facts}, "loss_curve": [[1, 3.0], [2, 2.5]], "items": items, "train": train,
            "eval": {"success_rate": sr, "wer": wer, "sim_seen": 0.5, "sim_unseen": None, "mos": 3.0,
                     "mos_judge": "dnsmos-p808", "rtf": 0.5}, "align": None}  # fmt: skip


def test_run_study_skips_finished_cells_and_resumes_after_a_failure(tmp_path: Path):
    study = _study(tmp_path, [_cell("a", seeds=[0, 1]), _cell("b"), _cell("c", init_from="b")])
    out, calls = tmp_path / "out", []

    def runner(study: StudyConfig, cell: CellSpec, seed: int, out: Path) -> dict[str, Any]:
        calls.append((cell.name, seed))
        if cell.name == "c" and len(calls) < 5:
            raise RuntimeError("killed")
        return _fake_result(cell.name, seed, 0.5, 0.1)

    with pytest.raises(RuntimeError):
        run_study(study, out, runner=runner, log=lambda _: None)
    assert calls == [("a", 0), ("a", 1), ("b", 0), ("c", 0)]
    assert not result_path(out, "c", 0).exists()  # a failed cell leaves no result, so it is retried
    report = run_study(study, out, runner=runner, log=lambda _: None)
    assert calls[4:] == [("c", 0)] and report["missing"] == [] and report["runs"] == 4
    run_study(study, out, runner=runner, log=lambda _: None)
    assert len(calls) == 5  # everything finished: nothing runs again
    result_path(out, "a", 1).unlink()
    assert [(c.name, s) for c, s in pending(study, out)] == [("a", 1)]


def test_selected_cells_pull_in_their_stage_one_cell(tmp_path: Path):
    study = _study(tmp_path, [_cell("a"), _cell("b"), _cell("c", init_from="b")])
    out = tmp_path / "out"
    assert [c.name for c, _ in pending(study, out, only=["c"])] == ["b", "c"]
    result_path(out, "b", 0).parent.mkdir(parents=True)
    result_path(out, "b", 0).write_text(json.dumps({**_fake_result("b", 0, 1.0, 0.0), "cell": "b", "seed": 0}))
    assert [c.name for c, _ in pending(study, out, only=["c"])] == ["c"]


def test_seed_selection_splits_a_grid_by_seed(tmp_path: Path):
    study = _study(tmp_path, [_cell("a", seeds=[0, 1, 2]), _cell("b"), _cell("c", seeds=[1])])
    out = tmp_path / "out"
    assert [(c.name, s) for c, s in pending(study, out, seeds=[0])] == [("a", 0), ("b", 0)]
    assert [(c.name, s) for c, s in pending(study, out, seeds=[1, 2])] == [("a", 1), ("a", 2), ("c", 1)]
    assert [(c.name, s) for c, s in pending(study, out, only=["a"], seeds=[2])] == [("a", 2)]


def test_report_tables_show_seed_spread_missing_cells_and_null_figures(tmp_path: Path):
    study = _study(tmp_path, [_cell("a", seeds=[0, 1, 2], tables=["t1", "t3"]), _cell("b", tables=["t1", "t2"]), _cell("c", tables=["t1"])])
    out = tmp_path / "out"
    for seed, sr in zip((0, 1, 2), (0.4, 0.5, 0.6)):
        result_path(out, "a", seed).parent.mkdir(parents=True, exist_ok=True)
        result_path(out, "a", seed).write_text(json.dumps({**_fake_result("a", seed, sr, 0.2), "cell": "a", "seed": seed}))
    result_path(out, "b", 0).parent.mkdir(parents=True)
    result_path(out, "b", 0).write_text(json.dumps({**_fake_result("b", 0, 1.0, None, group_size=12), "cell": "b", "seed": 0}))
    report = write_report(study, out)
    t1 = report["tables"]["t1"]
    assert [r["cell"] for r in t1["rows"]] == ["a", "b"] and report["missing"] == ["c/seed0"]
    sr = t1["columns"].index("SR")
    assert t1["rows"][0]["values"][sr]["n"] == 3 and t1["rows"][0]["values"][sr]["mean"] == pytest.approx(0.5)
    assert format_value(t1["rows"][0]["values"][sr], 2) == "0.50 ± 0.10 (3)"
    tps = t1["columns"].index("TPS")  # a fact of the setup: one value, no spread over seeds
    assert format_value(t1["rows"][0]["values"][tps], 0) == "150"
    assert "MOS (dnsmos-p808)" in t1["columns"]
    wer = t1["columns"].index("WER")
    assert format_value(t1["rows"][1]["values"][wer], 3) == "n/a"  # null stays n/a, never 0
    t3 = report["tables"]["t3"]
    em_in, em_out = t3["columns"].index("EM in"), t3["columns"].index("EM out")
    assert t3["rows"][0]["values"][em_in]["mean"] == pytest.approx(100.0)
    assert t3["rows"][0]["values"][em_out]["mean"] == pytest.approx(0.0)
    md = (out / "report.md").read_text()
    assert "Table 1" in md and "Not run yet" in md and "c/seed0" in md and (out / "loss_curves.png").is_file()
    assert "| b | 0 | 2 | 4 | 2.00 | 100 | 2.500 | n/a |" in md  # the runs table
    assert json.loads((out / "report.json").read_text())["runs"] == 4
    assert set(build_tables(study, read_results(study, out))) == {"t1", "t2", "t3"}


@pytest.mark.slow
def test_micro_study_end_to_end(tiny_corpus: Path, tmp_path: Path):
    """Two cells (NTP and a speaker-aware stage-2 role-QA from MTP-12) on the tiny corpus, no judges."""
    cells = [
        _cell("ntp", tables=["t1"], align=True),
        {**_cell("spk12"), "config": "configs/slm/tiny_mtp12_spk.yaml", "tables": ["t2"]},
        {**_cell("qa", init_from="spk12", steps=2), "config": "configs/slm/tiny_sft_roleqa_mtp12.yaml", "tables": ["t3"],
         "eval": {"kinds": ["qa"], "limit": 2, "judges": None, "generation": {"seconds_per_char": 0.0, "extra_seconds": 0.4}}},
    ]  # fmt: skip
    gen = {"kinds": ["tts"], "limit": 2, "judges": None, "generation": {"seconds_per_char": 0.0, "extra_seconds": 0.4}}
    study = _study(tmp_path, cells, corpus=str(tiny_corpus), steps=3, cache_dir=str(tmp_path / "cache"), threads=1, device="cpu", eval=gen)
    out = tmp_path / "out"
    report = run_study(study, out, log=lambda _: None)
    assert report["runs"] == 3 and not report["missing"]
    ntp = json.loads(result_path(out, "ntp", 0).read_text())
    assert ntp["train"]["steps"] == 3 and ntp["facts"]["group_size"] == 1 and len(ntp["items"]) == 2
    assert ntp["align"]["layers"] and (out / "cells" / "ntp" / "umap_seed0.png").is_file()
    assert ntp["text_gain"]["items"] == 2 and all(it["text_gain"] is not None for it in ntp["items"])
    qa = json.loads(result_path(out, "qa", 0).read_text())
    assert qa["facts"]["stage"] == "sft" and {i["kind"] for i in qa["items"]} == {"qa"}
    assert {"t1", "t2", "t3", "t4"} >= set(report["tables"]) >= {"t1", "t2", "t3"}
    assert qa["init_from"]["cell"] == "spk12" and qa["init_from"]["loss"] == qa["init_from"]["recorded_loss"]

    # The stage-1 results came from "another machine": its checkpoint is gone, so the stage-2 cell rebuilds it.
    shutil.rmtree(run_dir(study, "spk12", 0))
    result_path(out, "qa", 0).unlink()
    run_study(study, out, only=["qa"], log=lambda _: None)
    rebuilt = json.loads(result_path(out, "qa", 0).read_text())["init_from"]
    assert (run_dir(study, "spk12", 0) / "summary.json").is_file()
    assert rebuilt["recorded_loss"] == qa["init_from"]["recorded_loss"]
    assert rebuilt["loss"] == pytest.approx(rebuilt["recorded_loss"], rel=1e-3)  # same overrides and seed


class _EchoAsr:
    """A fake ASR judge that hears every clip as one fixed sentence."""

    name = "echo"

    def __init__(self, text: str) -> None:
        self.text = text

    def transcribe(self, wav) -> str:  # noqa: ANN001
        return self.text


def test_rejudge_rescores_kept_audio_and_keeps_generation_figures(tiny_corpus: Path, tmp_path: Path):
    from speechlm.data.manifest import Corpus
    from speechlm.eval.judges import Judges
    from speechlm.eval.study_cell import rejudge_cell

    corpus = Corpus.open(tiny_corpus)
    rows = corpus.tts("test")[:3]
    run = tmp_path / "run"
    (run / "eval" / "audio").mkdir(parents=True)
    for row in rows[:2]:  # the third item kept no wav: it stays a failure
        shutil.copy(corpus.audio_path(row), run / "eval" / "audio" / f"{row.id}.wav")
    items = [{"id": r.id, "kind": "tts", "speaker": r.speaker, "seen": True, "domain": None, "success": True, "failure": None,
              "text": r.text, "hypothesis": "garbage", "wer": 1.0, "audio_seconds": 1.0, "text_gain": 0.5} for r in rows]  # fmt: skip
    result = {"cell": "a", "seed": 0, "train": {"out_dir": str(run)}, "items": items,
              "eval": {"rtf": 0.25, "wer": 1.0, "split": "test", "corpus": str(tiny_corpus)}}  # fmt: skip
    study = _study(tmp_path, [_cell("a")], corpus=str(tiny_corpus))
    judged = rejudge_cell(study, result, Judges(asr=_EchoAsr(rows[0].text), speaker=None, quality=None))
    by_id = {it["id"]: it for it in judged["items"]}
    assert by_id[rows[0].id]["wer"] == 0.0 and by_id[rows[0].id]["success"]
    assert by_id[rows[1].id]["wer"] > 0.0  # the echo is the wrong sentence for the second clip
    assert not by_id[rows[2].id]["success"] and by_id[rows[2].id]["failure"] == "no_audio"
    assert judged["eval"]["rtf"] == 0.25 and judged["eval"]["asr_judge"] == "echo" and judged["eval"]["wer"] < 1.0
    assert all(it["text_gain"] == 0.5 for it in judged["items"])  # not a judge's figure: kept
    assert result["items"][0]["wer"] == 1.0  # the input record is not modified
