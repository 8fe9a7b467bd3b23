"""Adapt the ASR judge's acoustic model to a corpus's voices, and load the result.

The pocketsphinx judge (``asr.py``) decodes with pocketsphinx's bundled en-us acoustic model, a
phonetically-tied mixture (PTM) model trained on adult read speech. The corpus voices are
synthetic (flite, festival, espeak-ng), and after every LM-side fix the judge's remaining errors
were acoustic confusions between words the grammar allows in the same slot ("her"/"our",
"book"/"bird"; docs/RESULTS.md, "Judges"). The standard remedy is CMU's recipe "adapting the
default acoustic model": force-align the adaptation data with the model (sphinxtrain ``bw``)
and update its Gaussians from those statistics, either by

- **MAP** (``map_adapt``): each Gaussian moves from its prior value towards the data mean in
  proportion to how much data it saw (means, variances; optionally mixture weights and
  transition matrices), or
- **MLLR** (``mllr_solve``): one affine transform of all means, a few kB, passed to pocketsphinx
  as ``mllr=``.

The adapted judge has heard the corpus voices read *other* sentences of the same grammar: it is
a judge calibrated to the domain, as issue 3 asks for; WER is measured on val/test sentences it
never heard. Only the train split is used (``AdaptConfig.split``).

Where the result lives: a folder holding only the files that differ from the bundled model
(``means``, ``variances``, ... or ``mllr_matrix``), an ``adapt.json`` manifest (method, data,
commands, the SHA-256 of the bundled files it was made from) and a README. At load time
:func:`assemble_acoustic_model` copies the bundled model into a scratch folder and lays the
adapted files over it, so the judge needs neither sphinxtrain nor the corpus audio. Rebuilding
(:func:`adapt_acoustic_model`, ``speechlm judge adapt``) needs sphinxtrain and the audio.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from tqdm import tqdm

from speechlm.assets import resolve_asset
from speechlm.config import to_dict

if TYPE_CHECKING:
    from speechlm.data.manifest import Corpus, Utterance

BUNDLED = "bundled"  # PocketsphinxConfig.acoustic_model value: pocketsphinx's own en-us model
MANIFEST = "adapt.json"
MLLR_FILE = "mllr_matrix"
# map_adapt's outputs, by the name of the bundled file they replace (mixture weights are stored
# by pocketsphinx as the 8-bit quantised ``sendump``).
MAP_FILES = {"means": "means", "variances": "variances", "mixture_weights": "sendump", "transition_matrices": "transition_matrices"}
ADAPTED_FILES = frozenset({*MAP_FILES.values(), MLLR_FILE})
SPHINXTRAIN_DIR = Path("/usr/lib/sphinxtrain")  # where Debian's sphinxtrain puts bw, map_adapt, ...
INSTALL_HINT = "apt-get install sphinxtrain sphinxbase-utils pocketsphinx"
PTM = ".ptm."  # sphinxtrain's tied-state-to-codebook mapping of a PTM model (one codebook per base phone)
SENDUMP_SHIFT = 10  # sendump bytes hold -log_1.0001(w) >> 10 (pocketsphinx's senone score shift)
LOG_BASE = 1.0001  # pocketsphinx's log base


def bundled_model_dir() -> Path:
    from pocketsphinx import get_model_path

    return Path(get_model_path("en-us/en-us"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Loading: bundled model + adapted files -> a model folder pocketsphinx can read


@dataclass(frozen=True)
class AcousticModel:
    """An assembled acoustic model: pocketsphinx's ``hmm`` folder and, for MLLR, its transform."""

    hmm: Path
    mllr: Path | None = None
    method: str | None = None  # "map" | "mllr"; None: the bundled model as shipped

    def decoder_settings(self) -> dict[str, str]:
        return {"hmm": str(self.hmm), **({"mllr": str(self.mllr)} if self.mllr else {})}


def assemble_acoustic_model(spec: str, scratch: str | Path) -> AcousticModel:
    """Resolve ``PocketsphinxConfig.acoustic_model``: ``"bundled"`` or an adapted-model folder.

    An adapted folder's files are laid over a copy of the bundled model in ``scratch`` (which
    must outlive only the decoders' construction: pocketsphinx reads the model once).
    """
    bundled = bundled_model_dir()
    if spec == BUNDLED:
        return AcousticModel(hmm=bundled)
    folder = resolve_asset(spec)  # a repository-relative path works from any directory
    if not folder.is_dir():
        raise FileNotFoundError(f"acoustic_model={spec!r} is neither {BUNDLED!r} nor an existing folder")
    manifest = _load_manifest(folder)
    present = sorted(p.name for p in folder.iterdir() if p.name in ADAPTED_FILES)
    if not present:
        raise ValueError(f"{folder} holds none of the adapted-model files {sorted(ADAPTED_FILES)}")
    stale = [n for n, digest in manifest["base_sha256"].items() if _sha256(bundled / n) != digest]
    if stale:
        raise ValueError(
            f"{folder} was adapted from a different bundled model ({', '.join(stale)} changed since); "
            f"rebuild it with `speechlm judge adapt`"
        )
    changed = [n for n in present if manifest.get("files_sha256", {}).get(n, _sha256(folder / n)) != _sha256(folder / n)]
    if changed:
        raise ValueError(f"{folder}: {', '.join(changed)} differ from the checksums in {MANIFEST} (a partial copy or edit?)")
    if present == [MLLR_FILE]:  # a transform of the bundled means: no model copy needed
        return AcousticModel(hmm=bundled, mllr=folder / MLLR_FILE, method=manifest["method"])
    hmm = Path(scratch) / "acoustic_model"
    shutil.copytree(bundled, hmm, dirs_exist_ok=True)
    for name in present:
        shutil.copyfile(folder / name, hmm / name)
    return AcousticModel(hmm=hmm, method=manifest["method"])


def _load_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not an adapted acoustic model (make one with `speechlm judge adapt`)")
    manifest = json.loads(path.read_text())
    for key in ("method", "base_sha256"):
        if key not in manifest:
            raise ValueError(f"{path}: missing {key!r}")
    return manifest


# --------------------------------------------------------------------------------------------
# Mixture weights: pocketsphinx ships them quantised (sendump); bw and map_adapt need floats


def read_sendump(path: str | Path) -> np.ndarray:
    """Mixture weights ``[n_senones, n_features, n_codewords]`` from pocketsphinx's ``sendump``.

    Layout: length-prefixed header strings (a 0 length ends them), then int32 #codewords and
    #senones, then per feature and codeword one byte per senone holding -log_1.0001(w) >> 10.
    The weights are returned as stored (floored, so a mixture sums to a little under 1);
    :func:`write_s3_mixw` + sphinxtrain's ``mk_s2sendump -mwfloor 1e-12`` reproduces the file.
    """
    data = Path(path).read_bytes()
    offset = 0
    while True:
        (length,) = struct.unpack_from("<i", data, offset)
        offset += 4 + length
        if length == 0:
            break
    header = data[: offset].decode("latin-1")
    if "cluster_count 0" not in header:
        raise ValueError(f"{path}: only unclustered sendump files are supported")
    n_features = int(header.split("feature_count ")[1].split("\0")[0]) if "feature_count " in header else 1
    n_codewords, n_senones = struct.unpack_from("<ii", data, offset)
    offset += 8
    count = n_features * n_codewords * n_senones
    if len(data) - offset != count:
        raise ValueError(f"{path}: expected {count} weight bytes, found {len(data) - offset}")
    q = np.frombuffer(data, np.uint8, count, offset).reshape(n_features, n_codewords, n_senones)
    log_w = -(q.astype(np.float64) * (1 << SENDUMP_SHIFT)) * np.log(LOG_BASE)
    return np.exp(log_w).transpose(2, 0, 1)


def write_s3_mixw(path: str | Path, weights: np.ndarray) -> Path:
    """Write ``weights [n_senones, n_features, n_codewords]`` as a SphinxTrain s3 mixture-weight file."""
    if weights.ndim != 3:
        raise ValueError(f"mixture weights must be [senones, features, codewords], got shape {weights.shape}")
    header = b"s3\nversion 1.0\n"
    header += b" " * (-(len(header) + len(b"endhdr\n")) % 4) + b"endhdr\n"  # data on a 4-byte boundary
    with open(path, "wb") as f:
        f.write(header + struct.pack("<i", 0x11223344))  # byte-order magic
        f.write(struct.pack("<IIII", *weights.shape, weights.size))
        f.write(np.ascontiguousarray(weights, dtype="<f4").tobytes())
    return Path(path)


# --------------------------------------------------------------------------------------------
# Building: corpus audio + transcripts -> sphinxtrain statistics -> adapted files


@dataclass(frozen=True)
class AdaptConfig:
    """``speechlm judge adapt`` settings (YAML maps 1:1: configs/eval/adapt.yaml)."""

    method: Literal["map", "mllr"] = "map"
    split: str = "train"  # never val/test: those are what the adapted judge is measured on
    engines: tuple[str, ...] = ()  # adapt on these engines' speakers only (empty: every speaker)
    max_per_speaker: int = 0  # the first clips of each speaker (0: all)
    # MAP: which of map_adapt's re-estimates replace the bundled parameters.
    parameters: tuple[str, ...] = ("means", "variances")
    tau: float | None = None  # MAP prior weight (None: map_adapt's Bayesian update, which ignores tau)

    def __post_init__(self) -> None:
        if self.split in ("val", "test"):
            raise ValueError(f"adapt on the train split: {self.split!r} is where the judge is measured")
        unknown = set(self.parameters) - set(MAP_FILES)
        if self.method == "map" and (unknown or not self.parameters):
            raise ValueError(f"parameters must be a non-empty subset of {sorted(MAP_FILES)}, got {self.parameters}")
        if self.max_per_speaker < 0 or (self.tau is not None and self.tau <= 0):
            raise ValueError(f"need max_per_speaker >= 0 and tau > 0, got {self.max_per_speaker}, {self.tau}")


@dataclass(frozen=True)
class _Tools:
    """The sphinxtrain/sphinxbase/pocketsphinx command-line tools the recipe runs."""

    sphinx_fe: str
    mdef_convert: str
    bw: str
    map_adapt: str
    mllr_solve: str
    mk_s2sendump: str

    @classmethod
    def find(cls) -> _Tools:
        def tool(name: str, package: str) -> str:
            found = shutil.which(name) or shutil.which(name, path=str(SPHINXTRAIN_DIR))
            if found is None:
                raise FileNotFoundError(f"{name} (Debian package {package}) not found: adapting needs CMU sphinxtrain — {INSTALL_HINT}")
            return found

        return cls(
            sphinx_fe=tool("sphinx_fe", "sphinxbase-utils"),
            mdef_convert=tool("pocketsphinx_mdef_convert", "pocketsphinx"),
            **{name: tool(name, "sphinxtrain") for name in ("bw", "map_adapt", "mllr_solve", "mk_s2sendump")},
        )


def _run(argv: Sequence[str | Path], log: Path, commands: list[str]) -> None:
    """Run one tool, its output appended to ``log``; the command (relative to the work dir) is recorded."""
    argv = [str(a) for a in argv]
    commands.append(" ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv)))
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(argv)}\n")
        f.flush()
        done = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed (exit {done.returncode}); see {log}")


def _write_data(corpus_dir: Path, cfg: AdaptConfig, work: Path) -> tuple[dict, dict[str, str]]:
    """Audio as 16-bit raw PCM (the samples the judge decodes), the control file and transcripts;
    returns the data's summary and each clip's speaker."""
    from speechlm.audio import load_audio
    from speechlm.data.grammar import tokenize
    from speechlm.data.manifest import Corpus
    from speechlm.eval.judges.base import JUDGE_SAMPLE_RATE, to_pcm16

    corpus = Corpus.open(corpus_dir)
    rows = _select_clips(corpus, cfg)
    dic = corpus_dir / "grammar" / "domain.dic"
    lexicon = {line.split()[0].split("(")[0] for line in dic.read_text().splitlines() if line.strip()}
    (work / "raw").mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    with open(work / "adapt.fileids", "w") as ctl, open(work / "adapt.transcription", "w") as lsn:
        for utt in tqdm(rows, desc="adapt: audio", unit="utt"):
            words = tokenize(utt.text)
            missing = [w for w in words if w not in lexicon]
            if missing:
                raise ValueError(f"{utt.id}: words {missing} are not in {corpus_dir}/grammar/domain.dic")
            wav = load_audio(corpus.audio_path(utt), JUDGE_SAMPLE_RATE).wav
            seconds += len(wav) / JUDGE_SAMPLE_RATE
            (work / "raw" / f"{utt.id}.raw").write_bytes(to_pcm16(wav))
            ctl.write(f"{utt.id}\n")
            lsn.write(f"<s> {' '.join(words)} </s> ({utt.id})\n")
    summary = {"clips": len(rows), "hours": round(seconds / 3600, 3), "speakers": dict(sorted(Counter(u.speaker for u in rows).items()))}
    return summary, {utt.id: utt.speaker for utt in rows}


def _select_clips(corpus: Corpus, cfg: AdaptConfig) -> list[Utterance]:
    """``cfg.split``'s clips of ``cfg.engines`` (all when empty), the first ``cfg.max_per_speaker`` per speaker."""
    taken: Counter[str] = Counter()
    rows = []
    for utt in corpus.tts(cfg.split):
        wanted = not cfg.engines or corpus.speakers[utt.speaker].engine in cfg.engines
        if wanted and (not cfg.max_per_speaker or taken[utt.speaker] < cfg.max_per_speaker):
            taken[utt.speaker] += 1
            rows.append(utt)
    if not rows:
        raise ValueError(f"{corpus.root}: no {cfg.split} clips of engines {cfg.engines or 'any'}")
    return rows


def _feat_params(model: Path) -> dict[str, str]:
    tokens = (model / "feat.params").read_text().split()
    return dict(zip(tokens[0::2], tokens[1::2]))


def _base_model(tools: _Tools, work: Path, log: Path, commands: list[str]) -> Path:
    """The bundled model in the forms sphinxtrain reads: text ``mdef.txt``, float ``mixture_weights``."""
    base = work / "base"
    shutil.copytree(bundled_model_dir(), base, dirs_exist_ok=True)
    _run([tools.mdef_convert, "-text", "base/mdef", "base/mdef.txt"], log, commands)
    write_s3_mixw(base / "mixture_weights", read_sendump(base / "sendump"))
    commands.append("# base/mixture_weights <- base/sendump (speechlm.eval.judges.adapt.read_sendump + write_s3_mixw)")
    return base


def _statistics(tools: _Tools, corpus_dir: Path, work: Path, log: Path, commands: list[str]) -> None:
    """MFCCs with the model's own front end (feat.params), then bw's forced-alignment counts."""
    feat = _feat_params(work / "base")
    if feat.get("-model") != "ptm":
        raise ValueError(f"the recipe adapts a PTM model; {bundled_model_dir()}/feat.params says -model {feat.get('-model')}")
    # -remove_silence no: sphinx_fe's default VAD drops frames; pocketsphinx 5 decodes every frame.
    _run([tools.sphinx_fe, "-argfile", "base/feat.params", "-samprate", "16000", "-remove_silence", "no",
          "-raw", "yes", "-input_endian", "little", "-c", "adapt.fileids", "-di", "raw", "-ei", "raw",
          "-do", "feat", "-eo", "mfc"], log, commands)  # fmt: skip
    shutil.copyfile(corpus_dir / "grammar" / "domain.dic", work / "domain.dic")
    (work / "accum").mkdir(exist_ok=True)  # bw waits forever for a missing accumdir
    _run([tools.bw, "-hmmdir", "base", "-moddeffn", "base/mdef.txt", "-ts2cbfn", PTM,
          "-feat", feat["-feat"], "-svspec", feat["-svspec"], "-cmn", "current", "-agc", feat.get("-agc", "none"),
          "-dictfn", "domain.dic", "-fdictfn", "base/noisedict", "-ctlfn", "adapt.fileids",
          "-lsnfn", "adapt.transcription", "-cepdir", "feat", "-accumdir", "accum", "-timing", "no"], log, commands)  # fmt: skip


def _estimate(tools: _Tools, cfg: AdaptConfig, work: Path, log: Path, commands: list[str]) -> list[Path]:
    """The adapted files, named as the bundled files they replace (or ``mllr_matrix``)."""
    if cfg.method == "mllr":
        _run([tools.mllr_solve, "-meanfn", "base/means", "-varfn", "base/variances",
              "-outmllrfn", MLLR_FILE, "-accumdir", "accum"], log, commands)  # fmt: skip
        return [work / MLLR_FILE]
    (work / "map").mkdir(exist_ok=True)
    prior = ["-tau", str(cfg.tau), "-fixedtau", "yes", "-bayesmean", "no"] if cfg.tau else []
    _run([tools.map_adapt, "-moddeffn", "base/mdef.txt", "-ts2cbfn", PTM, "-meanfn", "base/means",
          "-varfn", "base/variances", "-mixwfn", "base/mixture_weights", "-tmatfn", "base/transition_matrices",
          "-accumdir", "accum", "-mapmeanfn", "map/means", "-mapvarfn", "map/variances",
          "-mapmixwfn", "map/mixture_weights", "-maptmatfn", "map/transition_matrices", *prior], log, commands)  # fmt: skip
    if "mixture_weights" in cfg.parameters:  # floor as low as the bundled sendump's (read_sendump)
        _run([tools.mk_s2sendump, "-pocketsphinx", "yes", "-moddeffn", "base/mdef.txt", "-mwfloor", "1e-12",
              "-mixwfn", "map/mixture_weights", "-sendumpfn", "map/sendump"], log, commands)  # fmt: skip
    return [work / "map" / MAP_FILES[p] for p in cfg.parameters]


def adapt_acoustic_model(
    corpus_dir: str | Path, out: str | Path, cfg: AdaptConfig = AdaptConfig(), work: str | Path | None = None
) -> Path:
    """Adapt the bundled model to ``corpus_dir``'s ``cfg.split`` clips; write the result to ``out``.

    ``work`` keeps the intermediate files (features, bw counts, logs); default: a temp folder.
    Needs sphinxtrain (``_Tools.find`` names the packages); takes ~2 min per hour of audio.
    """
    tools = _Tools.find()
    corpus_dir, out = Path(corpus_dir), Path(out)
    with tempfile.TemporaryDirectory(prefix="speechlm-adapt-") as tmp:
        work = Path(work) if work is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log, commands = work / "adapt.log", []
        log.write_text("")
        data, speaker_of = _write_data(corpus_dir, cfg, work)
        _base_model(tools, work, log, commands)
        print(f"adapt: bw on {data['clips']} clips ({data['hours']} h) ...", flush=True)
        _statistics(tools, corpus_dir, work, log, commands)
        files = _estimate(tools, cfg, work, log, commands)
        out.mkdir(parents=True, exist_ok=True)
        for stale in ADAPTED_FILES:  # a rebuild with other parameters must not leave old files
            (out / stale).unlink(missing_ok=True)
        for path in files:
            shutil.copyfile(path, out / path.name)
        # bw drops a clip whose forced alignment never reaches the final state (espeak-ng clips
        # the bundled model cannot align): counted per speaker in the manifest.
        skipped = Counter(speaker_of[line.split()[-2]] for line in log.read_text().splitlines() if line.endswith(" ignored"))
        manifest = _manifest(corpus_dir, cfg, {**data, "bw_skipped": dict(sorted(skipped.items()))}, commands, out, log)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _manifest(corpus_dir: Path, cfg: AdaptConfig, data: dict, commands: list[str], out: Path, log: Path) -> dict:
    from importlib.metadata import version

    bundled = bundled_model_dir()
    overall = [line for line in log.read_text().splitlines() if line.startswith("overall>")]
    return {
        "method": cfg.method,
        "config": to_dict(cfg),
        "corpus": str(corpus_dir),
        "data": data,
        "bw_overall": overall[-1] if overall else None,  # frames, mean log-likelihood per frame, total
        "pocketsphinx": version("pocketsphinx"),
        "base_sha256": {p.name: _sha256(p) for p in sorted(bundled.iterdir()) if p.name in {"mdef", "feat.params", *ADAPTED_FILES}},
        "files_sha256": {p.name: _sha256(p) for p in sorted(out.iterdir()) if p.name in ADAPTED_FILES},
        "commands": commands,
    }
