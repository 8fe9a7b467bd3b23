"""The decoding benchmark: same audio for every g, the report keys of DESIGN.md §8, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechlm.bench.decode import DecodeBenchConfig, _frames, format_table, run_benchmark
from speechlm.cli import main

ROOT = Path(__file__).resolve().parents[2]
CODEC = ROOT / "configs" / "codec" / "tiny_coupled_rvq.yaml"


@pytest.fixture(scope="module")
def report() -> dict:
    cfg = DecodeBenchConfig(models=("tiny",), group_sizes=(1, 3, 6), seconds=0.1, repeats=2, codec=str(CODEC), threads=1)
    return run_benchmark(cfg, progress=False)


def test_every_g_makes_the_same_audio_in_g_times_fewer_steps(report: dict):
    runs = {r["g"]: r for r in report["runs"]}
    frames, K = report["frames"], report["streams"]
    assert frames * K % 6 == 0  # rounded up so that every g fills whole groups
    for g, r in runs.items():
        assert r["audio_seconds"] == pytest.approx(frames / report["frame_rate"])
        assert r["steps"] == frames * K // g
        assert r["ideal_speedup"] == g
        assert len(r["decode_seconds_all"]) == 2
        assert r["step_ms"]["p10"] <= r["step_ms"]["median"] <= r["step_ms"]["p90"]
    assert runs[1]["speedup_vs_ntp"] == pytest.approx(1.0)


def test_report_has_the_design_keys_and_a_table(report: dict):
    assert {"device", "runs"} <= set(report)
    keys = {"model", "params", "g", "audio_seconds", "steps", "seconds", "steps_per_s", "rtf", "speedup_vs_ntp", "ideal_speedup"}
    for r in report["runs"]:
        assert keys <= set(r)
        assert r["rtf_with_codec"] > r["rtf"] > 0  # the codec decode adds time
        assert r["first_packet_seconds"] > 0
    json.dumps(report)  # serialisable as it is
    table = format_table(report)
    assert "speedup" in table and len(table.splitlines()) == 2 + len(report["runs"])


def test_frames_round_up_to_whole_groups_for_every_g():
    cfg = DecodeBenchConfig(seconds=1.0, group_sizes=(1, 3, 6, 12))
    frames = _frames(cfg, frame_rate=50.0, K=3)
    assert frames >= 50 and all(frames * 3 % g == 0 for g in cfg.group_sizes)
    assert _frames(DecodeBenchConfig(seconds=10.0), 80.0, 3) == 800  # the study's 10 s at FACodec's 80 Hz


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(models=("gpt5",)), "unknown model shape"),
        (dict(group_sizes=(0,)), "group sizes"),
        (dict(seconds=0.0), "seconds"),
        (dict(repeats=0), "repeats"),
        (dict(dtype="int8"), "dtype"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecodeBenchConfig(**kwargs)


def test_cli_reports_a_missing_codec(capsys):
    assert main(["bench", "decode", "--models", "tiny", "--codec", "/nonexistent/codec.yaml"]) == 2
    assert "codec not found" in capsys.readouterr().err
