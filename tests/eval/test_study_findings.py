"""Claim verdicts from a grid's results: paired bootstrap, floors, direction-only metrics, aggregation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from speechlm import config as cfglib
from speechlm.eval.study import StudyConfig
from speechlm.eval.study_findings import Claim, Comparison, claim_verdict, evaluate_claims, judge, paired_bootstrap


def _result(cell: str, key: str, values: list[float | None], seed: int = 0, align: dict[str, float] | None = None) -> dict[str, Any]:
    items = [{"id": f"u{i}", key: v} for i, v in enumerate(values)]
    layers = {"0": {"st_sim": 0.0, "riemannian": 0.0}, "4": align} if align else None
    return {"cell": cell, "seed": seed, "items": items, "eval": {"rtf": 1.0}, "align": {"layers": layers} if layers else None}


def _by_cell(*results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        out.setdefault(r["cell"], []).append(r)
    return out


def test_paired_bootstrap_interval_brackets_the_mean_and_collapses_without_spread():
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, 200)
    diff, low, high = paired_bootstrap(a + 0.5, a)  # the same items shifted: every paired difference is 0.5
    assert diff == pytest.approx(0.5) and low == pytest.approx(0.5) and high == pytest.approx(0.5)
    diff, low, high = paired_bootstrap(rng.normal(0.3, 1.0, 400), rng.normal(0.0, 1.0, 400))
    assert low < diff < high and 0.0 < low  # 0.3 apart with 400 items: well outside noise


def test_item_metric_verdicts_follow_the_interval():
    rng = np.random.default_rng(0)
    low_wer = list(rng.uniform(0.0, 0.2, 40))
    high_wer = list(rng.uniform(0.4, 0.6, 40))
    cells = _by_cell(_result("a", "wer", low_wer), _result("b", "wer", high_wer))
    assert judge(Comparison("wer", "lower", "a", "b"), cells)["verdict"] == "reproduced"
    assert judge(Comparison("wer", "lower", "b", "a"), cells)["verdict"] == "contradicted"
    noisy = _by_cell(_result("a", "wer", list(rng.uniform(0, 0.5, 20))), _result("b", "wer", list(rng.uniform(0, 0.5, 20))))
    row = judge(Comparison("wer", "lower", "a", "b"), noisy)
    assert row["ci"][0] < 0 < row["ci"][1] and row["verdict"] == "inconclusive" and row["n"] == 20


def test_items_are_paired_by_id_and_seeds_are_averaged():
    # Cell a has two seeds; item u1 failed in b (no WER): only u0 and u2 are compared.
    cells = _by_cell(
        _result("a", "wer", [0.0, 0.0, 0.2], seed=0),
        _result("a", "wer", [0.2, 0.0, 0.0], seed=1),
        _result("b", "wer", [0.5, None, 0.5]),
    )
    row = judge(Comparison("wer", "lower", "a", "b"), cells)
    assert row["n"] == 2 and row["value"] == pytest.approx(0.1) and row["diff"] == pytest.approx(-0.4)


def test_floors_and_missing_cells_are_not_counted_as_evidence():
    unintelligible = _by_cell(_result("a", "wer", [0.95] * 10), _result("b", "wer", [1.0] * 10))
    assert judge(Comparison("wer", "lower", "a", "b"), unintelligible)["verdict"] == "not measurable"
    assert judge(Comparison("wer", "lower", "a", "zzz"), unintelligible)["verdict"] == "not run"
    no_items = _by_cell(_result("a", "wer", [0.1, 0.2]), _result("b", "wer", [None, None]))
    assert judge(Comparison("wer", "lower", "a", "b"), no_items)["verdict"] == "not measurable"


def test_text_gain_separates_cells_whose_wer_is_saturated():
    rng = np.random.default_rng(2)
    items = [{"id": f"u{i}", "wer": 1.0, "text_gain": g} for i, g in enumerate(rng.normal(0.3, 0.05, 30))]
    reads_more = {"cell": "a", "seed": 0, "items": items, "eval": {}}
    reads_less = _result("b", "text_gain", list(rng.normal(0.1, 0.05, 30)))
    cells = _by_cell(reads_more, {**reads_less, "items": [{**it, "wer": 1.0} for it in reads_less["items"]]})
    assert judge(Comparison("wer", "lower", "a", "b"), cells)["verdict"] == "not measurable"
    row = judge(Comparison("text_gain", "higher", "a", "b"), cells)
    assert row["verdict"] == "reproduced" and row["n"] == 30 and row["ci"][0] > 0


def test_non_inferiority_for_knowledge_kept():
    llm = [1.0] * 10 + [0.0] * 10  # EM 0.5
    keeps = _by_cell(_result("slm", "em", llm), _result("llm", "em", llm))
    loses = _by_cell(_result("slm", "em", [0.0] * 20), _result("llm", "em", llm))
    knows_nothing = _by_cell(_result("slm", "em", [0.0] * 20), _result("llm", "em", [0.0] * 20))
    comp = Comparison("em", "not_worse", "slm", "llm", margin=0.05)
    assert judge(comp, keeps)["verdict"] == "reproduced"
    assert judge(comp, loses)["verdict"] == "contradicted"
    assert judge(comp, knows_nothing)["verdict"] == "not measurable"


def test_alignment_metrics_give_a_direction_from_the_last_layer():
    cells = _by_cell(
        _result("mtp", "wer", [0.1], align={"st_sim": 0.8, "riemannian": 5.0}),
        _result("ntp", "wer", [0.1], align={"st_sim": 0.6, "riemannian": 9.0}),
    )
    assert judge(Comparison("st_sim", "higher", "mtp", "ntp"), cells)["verdict"] == "consistent"
    row = judge(Comparison("riemannian", "higher", "mtp", "ntp"), cells)
    assert row["verdict"] == "opposite" and row["diff"] == pytest.approx(-4.0)


def test_claim_verdict_aggregates_and_says_how_much_was_measured():
    assert claim_verdict([{"verdict": "reproduced"}, {"verdict": "consistent"}]) == "reproduced"
    assert claim_verdict([{"verdict": "contradicted"}, {"verdict": "opposite"}]) == "contradicted"
    assert claim_verdict([{"verdict": "reproduced"}, {"verdict": "contradicted"}]) == "mixed"
    assert claim_verdict([{"verdict": "inconclusive"}]) == "inconclusive"
    assert claim_verdict([{"verdict": "reproduced"}, {"verdict": "not run"}]) == "reproduced (1 of 2 measured)"
    assert claim_verdict([{"verdict": "not run"}, {"verdict": "not measurable"}]) == "not measurable"
    assert claim_verdict([{"verdict": "not run"}]) == "not run"
    claims = [Claim("5", "spk raises SIM", (Comparison("sim", "higher", "a", "b"),))]
    found = evaluate_claims(claims, [_result("a", "sim", [0.9] * 5), _result("b", "sim", [0.5] * 5)])
    assert found[0]["verdict"] == "reproduced" and found[0]["comparisons"][0]["n"] == 5


def test_bad_claims_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown claim metric"):
        Comparison("bleu", "lower", "a", "b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two different cells"):
        Comparison("wer", "lower", "a", "a")
    with pytest.raises(ValueError, match="no comparisons"):
        Claim("1", "empty", ())
    data = {
        "name": "t", "corpus": str(tmp_path), "steps": 5,
        "cells": [{"name": "a", "config": "configs/slm/tiny_ntp.yaml"}],
        "claims": [{"id": "1", "text": "x", "comparisons": [{"metric": "wer", "better": "lower", "cell": "a", "against": "b"}]}],
    }  # fmt: skip
    with pytest.raises(ValueError, match="cell 'b', which is not in the study"):
        cfglib.from_dict(StudyConfig, data)
