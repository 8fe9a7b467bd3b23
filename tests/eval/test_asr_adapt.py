"""The adapted acoustic model of the ASR judge: file formats, loading without sphinxtrain, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from speechlm.audio import load_audio
from speechlm.data.manifest import Corpus
from speechlm.eval.calibrate import reverse
from speechlm.eval.judges import PocketsphinxConfig, PocketsphinxJudge
from speechlm.eval.judges import adapt
from speechlm.eval.judges.adapt import (
    AdaptConfig,
    assemble_acoustic_model,
    bundled_model_dir,
    read_sendump,
    write_s3_mixw,
)
from speechlm.eval.metrics import wer

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "asr_judge" / "demo"


def _parse_s3(path: Path) -> np.ndarray:
    """A minimal reader of SphinxTrain's s3 float files, written from the format description."""
    data = path.read_bytes()
    end = data.index(b"endhdr\n") + len(b"endhdr\n")
    assert end % 4 == 0 and int.from_bytes(data[end : end + 4], "little") == 0x11223344
    d1, d2, d3, n = np.frombuffer(data, "<u4", 4, end + 4)
    assert n == d1 * d2 * d3
    return np.frombuffer(data, "<f4", n, end + 20).reshape(d1, d2, d3)


def test_bundled_sendump_reads_as_mixtures():
    weights = read_sendump(bundled_model_dir() / "sendump")
    assert weights.shape == (5126, 3, 128)  # senones, feature streams, codewords (mdef, means)
    sums = weights.sum(-1)
    # Stored floored and truncated to 8 bits, so each mixture sums to a little under 1.
    assert np.all((weights > 0) & (weights <= 1)) and 0.85 < sums.min() and sums.max() <= 1.0


def test_s3_mixw_round_trip(tmp_path: Path):
    weights = np.random.default_rng(0).dirichlet(np.ones(8), size=(5, 3)).astype(np.float32)
    back = _parse_s3(write_s3_mixw(tmp_path / "mixture_weights", weights))
    np.testing.assert_array_equal(back, weights)
    with pytest.raises(ValueError, match="senones, features, codewords"):
        write_s3_mixw(tmp_path / "bad", weights[0])


@pytest.mark.skipif(
    shutil.which("mk_s2sendump", path=str(adapt.SPHINXTRAIN_DIR)) is None or shutil.which("pocketsphinx_mdef_convert") is None,
    reason="needs sphinxtrain and pocketsphinx's tools (apt)",
)
def test_sendump_to_mixw_and_back_is_byte_identical(tmp_path: Path):
    """The conversion the adaptation recipe starts from loses nothing: sphinxtrain rebuilds the file."""
    mdef = tmp_path / "mdef.txt"
    subprocess.run(["pocketsphinx_mdef_convert", "-text", str(bundled_model_dir() / "mdef"), str(mdef)], check=True, capture_output=True)
    write_s3_mixw(tmp_path / "mixw", read_sendump(bundled_model_dir() / "sendump"))
    subprocess.run(
        [str(adapt.SPHINXTRAIN_DIR / "mk_s2sendump"), "-pocketsphinx", "yes", "-moddeffn", str(mdef), "-mwfloor", "1e-12",
         "-mixwfn", str(tmp_path / "mixw"), "-sendumpfn", str(tmp_path / "sendump")],
        check=True, capture_output=True,
    )  # fmt: skip
    assert (tmp_path / "sendump").read_bytes() == (bundled_model_dir() / "sendump").read_bytes()


def _fake_adapted(folder: Path, **manifest) -> Path:
    """An "adapted" folder whose means are the bundled ones (so decoding is unchanged)."""
    folder.mkdir()
    shutil.copyfile(bundled_model_dir() / "means", folder / "means")
    base = {n: adapt._sha256(bundled_model_dir() / n) for n in ("mdef", "means")}
    (folder / adapt.MANIFEST).write_text(json.dumps({"method": "map", "base_sha256": base, **manifest}))
    return folder


def test_assembled_model_is_the_bundled_one_with_the_adapted_files_laid_over(tmp_path: Path):
    model = assemble_acoustic_model(str(_fake_adapted(tmp_path / "am")), tmp_path / "scratch")
    assert model.method == "map" and model.mllr is None
    bundled = {p.name for p in bundled_model_dir().iterdir()}
    assert {p.name for p in model.hmm.iterdir()} == bundled
    assert assemble_acoustic_model("bundled", tmp_path).hmm == bundled_model_dir()


def test_bad_acoustic_model_folders_are_clear_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="neither 'bundled' nor an existing folder"):
        assemble_acoustic_model(str(tmp_path / "nowhere"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="adapt.json not found"):
        assemble_acoustic_model(str(tmp_path / "empty"), tmp_path)
    stale = _fake_adapted(tmp_path / "stale", base_sha256={"mdef": "0" * 64})
    with pytest.raises(ValueError, match="different bundled model .*mdef"):
        assemble_acoustic_model(str(stale), tmp_path)
    edited = _fake_adapted(tmp_path / "edited", files_sha256={"means": "0" * 64})
    with pytest.raises(ValueError, match="means differ from the checksums"):
        assemble_acoustic_model(str(edited), tmp_path)
    nothing = _fake_adapted(tmp_path / "nothing")
    (nothing / "means").unlink()
    with pytest.raises(ValueError, match="none of the adapted-model files"):
        assemble_acoustic_model(str(nothing), tmp_path)
    with pytest.raises(ValueError, match="acoustic_model"):
        PocketsphinxConfig(acoustic_model="")


def test_rebuilding_without_sphinxtrain_names_the_packages(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(adapt, "SPHINXTRAIN_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install sphinxtrain"):
        adapt.adapt_acoustic_model(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    "kwargs, match",
    [({"split": "test"}, "train split"), ({"parameters": ("means", "weights")}, "subset"), ({"tau": 0.0}, "tau > 0")],
)
def test_bad_adapt_settings_are_clear_errors(kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        AdaptConfig(**kwargs)


def test_shipped_adapted_model_matches_its_manifest():
    manifest = json.loads((SHIPPED / adapt.MANIFEST).read_text())
    assert manifest["config"]["split"] == "train" and set(manifest["data"]["speakers"]).isdisjoint({"ked", "awb_high", "es_f2"})
    files = {p.name for p in SHIPPED.iterdir() if p.name in adapt.ADAPTED_FILES}
    assert files and set(manifest["files_sha256"]) == files
    assert all(adapt._sha256(SHIPPED / n) == digest for n, digest in manifest["files_sha256"].items())


def test_shipped_adapted_judge_loads_without_sphinxtrain_and_is_not_fooled(tiny_corpus: Path, monkeypatch):
    def no_tools() -> None:
        raise AssertionError("loading the adapted judge must not need sphinxtrain")

    monkeypatch.setattr(adapt._Tools, "find", no_tools)
    judge = PocketsphinxJudge(PocketsphinxConfig(warps=(1.0,), acoustic_model=str(SHIPPED)), tiny_corpus)
    assert judge.name == f"pocketsphinx-domain2-grammar-{json.loads((SHIPPED / adapt.MANIFEST).read_text())['method']}"
    corpus = Corpus.open(tiny_corpus)
    rows = list({u.speaker: u for u in corpus.tts("train") if corpus.speakers[u.speaker].engine == "flite"}.values())[:3]
    refs, wavs = [u.text for u in rows], [load_audio(corpus.audio_path(u), 16_000).wav for u in rows]
    assert wer(refs, [judge.transcribe(w) for w in wavs]) <= 0.2
    assert wer(refs, [judge.transcribe(reverse(w)) for w in wavs]) >= 0.6
