import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechlm.cli import main
from speechlm.data.check import check_corpus


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_rows(path: Path, rows: list[dict], extra: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + extra)


class Picker:
    """Hands out distinct row indices matching a condition, so each corruption hits its own row."""

    def __init__(self, rows: list[dict]):
        self.rows, self.used = rows, set()

    def __call__(self, cond=lambda r: True) -> int:
        i = next(i for i, r in enumerate(self.rows) if i not in self.used and cond(r))
        self.used.add(i)
        return i


def corrupt(root: Path) -> set[tuple[str, str]]:
    """Damage a copy of the tiny corpus in every way `data check` knows; return the expected issues."""
    info = json.loads((root / "corpus.json").read_text())
    unseen = {s["name"] for s in info["speakers"] if not s["seen"]}
    seen_roles = {r["name"] for r in info["roles"] if r["seen"]}
    tts, qa = read_rows(root / "tts.jsonl"), read_rows(root / "qa.jsonl")
    pick, expected = Picker(tts), set()

    def at(i: int, kind: str, name: str = "tts.jsonl") -> None:
        expected.add((kind, f"{name}:{i + 1}"))

    i = pick(); (root / tts[i]["audio"]).unlink(); at(i, "missing_audio")
    i = pick(); wav = root / tts[i]["audio"]; raw = bytearray(wav.read_bytes()); raw[:4] = b"JUNK"
    wav.write_bytes(bytes(raw)); at(i, "corrupt_audio")
    i = pick(); tts[i]["text"] = "  "; at(i, "empty_text")
    i = pick(); tts[i]["speaker"] = "nobody"; at(i, "unknown_speaker")
    i = pick(); tts[i]["split"] = "dev"; at(i, "bad_split")
    i, j = pick(), pick(); tts[j]["id"] = tts[i]["id"]; at(j, "duplicate_id")
    i = pick(); sf.write(root / tts[i]["audio"], np.zeros(800, np.float32), 16000, subtype="PCM_16")
    tts[i]["duration"] = 0.05; at(i, "duration_range")
    i = pick(); x, _ = sf.read(root / tts[i]["audio"]); sf.write(root / tts[i]["audio"], x[::2], 8000, subtype="PCM_16")
    at(i, "bad_format")
    i = pick(); tts[i]["duration"] += 1.0; at(i, "duration_mismatch")
    i = pick(lambda r: r["speaker"] in unseen); tts[i]["split"] = "train"; at(i, "unseen_in_train")
    test = pick(lambda r: r["split"] == "test" and r["speaker"] not in unseen)
    tts[pick(lambda r: r["split"] == "train")]["text"] = tts[test]["text"]; at(test, "test_in_train")
    expected.add(("bad_row", f"tts.jsonl:{len(tts) + 1}"))
    write_rows(root / "tts.jsonl", tts, extra='{"id": "broken", \n')

    pick = Picker(qa)
    i = pick(); qa[i]["text"] = "The answer is wrong."; at(i, "bad_answer", "qa.jsonl")
    i = pick(lambda r: r["domain"] == "out" and r["role"] in seen_roles); qa[i]["split"] = "train"
    at(i, "domain_in_train", "qa.jsonl")
    i = pick(); qa[i]["role"] = "Nobody"; at(i, "unknown_role", "qa.jsonl")
    test = pick(lambda r: r["split"] == "test" and r["domain"] == "in" and r["role"] in seen_roles)
    qa[pick(lambda r: r["split"] == "train")]["question"] = qa[test]["question"]; at(test, "test_in_train", "qa.jsonl")
    i = pick(lambda r: r["role"] in seen_roles)
    qa[i]["speaker"] = next(s["name"] for s in info["speakers"] if s["seen"] and s["name"] != qa[i]["speaker"])
    at(i, "role_mismatch", "qa.jsonl")
    write_rows(root / "qa.jsonl", qa)
    return expected


@pytest.fixture()
def damaged(tiny_corpus: Path, tmp_path: Path) -> tuple[Path, set]:
    root = tmp_path / "damaged"
    shutil.copytree(tiny_corpus, root)
    return root, corrupt(root)


def test_clean_corpus_passes(tiny_corpus, capsys):
    report = check_corpus(tiny_corpus)
    assert report.ok, report.format()
    assert report.rows["tts.jsonl"] > 0 and report.audio_checked == sum(report.rows.values())
    assert main(["data", "check", str(tiny_corpus)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")


def test_every_problem_is_listed_without_stopping(damaged):
    root, expected = damaged
    report = check_corpus(root)
    assert not report.ok
    assert {(i.kind, i.where) for i in report.issues} == expected
    assert len(report.issues) == len(expected)
    text = report.format()
    assert all(where in text for _, where in expected)


def test_cli_exit_code_and_json(damaged, tmp_path, capsys):
    root, expected = damaged
    out = tmp_path / "report" / "check.json"
    assert main(["data", "check", str(root), "--json", str(out)]) == 1
    data = json.loads(out.read_text())
    assert data["ok"] is False and len(data["issues"]) == len(expected)
    assert sum(data["by_kind"].values()) == len(expected)
    assert "problem(s)" in capsys.readouterr().out


def test_missing_metadata_and_manifest(tiny_corpus, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(tiny_corpus, root)
    (root / "corpus.json").unlink()
    (root / "tts.jsonl").unlink()
    kinds = {i.kind for i in check_corpus(root).issues}
    assert kinds == {"bad_metadata", "missing_manifest"}
    with pytest.raises(FileNotFoundError, match="corpus folder not found"):
        check_corpus(tmp_path / "nowhere")
