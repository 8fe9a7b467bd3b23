"""Judge calibration on ground truth: can the judges be trusted on this corpus?

``speechlm judge calibrate --corpus DIR --split test --json OUT`` measures, on the corpus's real
(synthesised) audio of one split:

- **ASR**: WER of the domain-LM judge on clean audio, per speaker, and on two scrambled copies
  of the same audio — time-reversed, and cut into ``block_seconds`` blocks shuffled at random.
  Scrambled audio keeps the spectrum and phones of the clean clip but not the words, so a judge
  whose LM "repairs" garbage into valid sentences shows a low WER there; a trustworthy judge
  shows WER >= 80% (``SCRAMBLED_MIN_WER``). The general-English LM's clean WER is given beside.
- **Speaker**: cosine of every pair of clips; mean same-speaker minus mean different-speaker
  SIM (must be >= ``MIN_SIM_GAP``), and the equal-error rate of that verification task.
- **Quality**: the MOS judge's mean score of ground truth per speaker (a ceiling for TTS output).

Speakers are grouped by engine: pocketsphinx's acoustic model is far better on flite/festival
voices than on espeak-ng's formant synthesis (OFFLINE.md), so the clean-WER bound
(``CLEAN_MAX_WER``) applies to the former and espeak-ng is reported separately.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from speechlm.audio import load_audio
from speechlm.config import to_dict
from speechlm.eval.judges import JUDGE_SAMPLE_RATE, AsrJudge, JudgesConfig, PocketsphinxConfig, PocketsphinxJudge, build_judges
from speechlm.eval.metrics import ErrorCounts, cosine, equal_error_rate, word_errors
from speechlm.eval.report import format_value, markdown_table

CLEAN_MAX_WER = 0.03  # domain-LM WER on flite/festival ground truth must not exceed this
SCRAMBLED_MIN_WER = 0.80  # ... and on reversed / block-shuffled copies must reach at least this
MIN_SIM_GAP = 0.15  # mean same-speaker SIM - mean different-speaker SIM
REAL_ENGINES = frozenset({"flite", "festival"})
CONDITIONS = ("clean", "reversed", "shuffled")


@dataclass(frozen=True)
class CalibrationConfig:
    """``speechlm judge calibrate`` settings (YAML maps 1:1: configs/eval/calibrate.yaml)."""

    judges: JudgesConfig = field(default_factory=JudgesConfig)
    split: str = "test"
    max_per_speaker: int = 20  # clips per speaker (the first ones of the split, in manifest order)
    block_seconds: float = 0.1  # block length of the shuffled copy
    seed: int = 0
    general_asr: bool = True  # also measure pocketsphinx's general-English LM on clean audio
    # Leave the split's sentences out of the domain LM. The LM text holds train/val sentences
    # (never test ones), so without this a val WER would flatter the judge; on test it changes nothing.
    lm_holdout: bool = True

    def __post_init__(self) -> None:
        if self.max_per_speaker < 1 or self.block_seconds <= 0:
            raise ValueError(f"need max_per_speaker >= 1 and block_seconds > 0, got {self}")


def reverse(wav: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(wav[::-1])


def block_shuffle(wav: np.ndarray, block: int, rng: np.random.Generator) -> np.ndarray:
    """Cut ``wav`` into ``block``-sample pieces and permute them (a short tail stays last)."""
    n = len(wav) // block
    pieces = [wav[i * block : (i + 1) * block] for i in rng.permutation(n)]
    return np.concatenate([*pieces, wav[n * block :]])


@dataclass
class _Clip:
    id: str
    speaker: str
    text: str
    wav: np.ndarray


def _asr_errors(judge: AsrJudge, clips: list[_Clip], cfg: CalibrationConfig, conditions: tuple[str, ...]) -> dict:
    """``errors[condition][speaker] -> ErrorCounts``, the seconds spent per condition and, for the
    pocketsphinx judge with its grammar test, how many clips per condition it accepted the grammar on."""
    rng = np.random.default_rng(cfg.seed)
    block = int(round(cfg.block_seconds * JUDGE_SAMPLE_RATE))
    make = {"clean": lambda w: w, "reversed": reverse, "shuffled": lambda w: block_shuffle(w, block, rng)}
    errors: dict[str, dict[str, ErrorCounts]] = {c: defaultdict(lambda: ErrorCounts(0, 0, 0, 0)) for c in conditions}
    seconds = dict.fromkeys(conditions, 0.0)
    accepted = dict.fromkeys(conditions, 0)
    for clip in tqdm(clips, desc=f"asr {judge.name}", unit="utt"):
        for cond in conditions:
            start = time.perf_counter()
            if isinstance(judge, PocketsphinxJudge):
                result = judge.decode(make[cond](clip.wav))
                hyp, accepted[cond] = result.text, accepted[cond] + result.grammar_accepted
            else:
                hyp = judge.transcribe(make[cond](clip.wav))
            seconds[cond] += time.perf_counter() - start
            errors[cond][clip.speaker] = errors[cond][clip.speaker] + word_errors([clip.text], [hyp])
    return {"errors": errors, "seconds": seconds, "grammar_accepted": {c: n / len(clips) for c, n in accepted.items()}}


def _sum(counts: list[ErrorCounts]) -> float | None:
    total = sum(counts, ErrorCounts(0, 0, 0, 0))
    return total.rate if total.reference_length else None


def _speaker_stats(embeddings: list[np.ndarray], speakers: list[str]) -> dict[str, Any]:
    scores, same = [], []
    for i, j in itertools.combinations(range(len(embeddings)), 2):
        scores.append(cosine(embeddings[i], embeddings[j]))
        same.append(speakers[i] == speakers[j])
    s, y = np.array(scores), np.array(same)
    out: dict[str, Any] = {"n_trials": len(scores), "sim_same": None, "sim_different": None, "eer": None, "sim_gap": None}
    if y.any() and (~y).any():  # needs both kinds of trial (>= 2 clips of one speaker, >= 2 speakers)
        out.update(sim_same=float(s[y].mean()), sim_different=float(s[~y].mean()), eer=equal_error_rate(s, y))
        out["sim_gap"] = out["sim_same"] - out["sim_different"]
    return out


def calibrate(corpus_dir: str | Path, cfg: CalibrationConfig = CalibrationConfig()) -> dict[str, Any]:
    """Run every calibration measurement; returns ``{"summary", "speakers", "config"}``."""
    from speechlm.data.manifest import Corpus

    corpus = Corpus.open(corpus_dir)
    per_speaker: dict[str, list] = defaultdict(list)
    for utt in corpus.tts(cfg.split):
        if len(per_speaker[utt.speaker]) < cfg.max_per_speaker:
            per_speaker[utt.speaker].append(utt)
    if not per_speaker:
        raise ValueError(f"{corpus_dir}: no TTS rows in split {cfg.split!r}")
    clips = [
        _Clip(u.id, u.speaker, u.text, load_audio(corpus.audio_path(u), JUDGE_SAMPLE_RATE).wav)
        for rows in per_speaker.values()
        for u in rows
    ]
    held_out = [u.text for u in corpus.tts(cfg.split)] if cfg.lm_holdout else []
    judges = build_judges(cfg.judges, corpus_dir, lm_exclude=held_out)
    speakers = sorted(per_speaker)
    table = {s: {"speaker": s, "engine": corpus.speakers[s].engine, "n": len(per_speaker[s])} for s in speakers}
    summary: dict[str, Any] = {"split": cfg.split, "n_clips": len(clips), **judges.names()}
    audio_seconds = sum(len(c.wav) for c in clips) / JUDGE_SAMPLE_RATE

    if judges.asr is not None:
        asr = _asr_errors(judges.asr, clips, cfg, CONDITIONS)
        for cond in CONDITIONS:
            for s in speakers:
                table[s][f"wer_{cond}"] = asr["errors"][cond][s].rate
        real = [s for s in speakers if table[s]["engine"] in REAL_ENGINES]
        other = [s for s in speakers if s not in real]
        for group, members in (("real", real), ("espeak", other), ("all", speakers)):
            for cond in CONDITIONS:
                summary[f"wer_{cond}_{group}"] = _sum([asr["errors"][cond][s] for s in members])
        summary["asr_rtf"] = asr["seconds"]["clean"] / audio_seconds
        if isinstance(judges.asr, PocketsphinxJudge) and judges.asr.uses_grammar:
            for cond in CONDITIONS:  # share of clips whose grammatical N-best sentence passed the test
                summary[f"grammar_accepted_{cond}"] = asr["grammar_accepted"][cond]
    if cfg.general_asr and cfg.judges.asr.kind == "pocketsphinx":
        # The same acoustic model as the domain judge, so the two WERs differ by the LM alone.
        general = PocketsphinxJudge(PocketsphinxConfig(lm="general", acoustic_model=cfg.judges.asr.pocketsphinx.acoustic_model))
        errs = _asr_errors(general, clips, cfg, ("clean",))["errors"]["clean"]
        for s in speakers:
            table[s]["wer_general"] = errs[s].rate
        summary["wer_general_real"] = _sum([errs[s] for s in speakers if table[s]["engine"] in REAL_ENGINES])
        summary["wer_general_all"] = _sum([errs[s] for s in speakers])

    if judges.speaker is not None:
        embeddings = [judges.speaker.embed(c.wav) for c in tqdm(clips, desc="speaker", unit="utt")]
        summary.update(_speaker_stats(embeddings, [c.speaker for c in clips]))
    if judges.quality is not None:
        scores = defaultdict(list)
        for c in tqdm(clips, desc="quality", unit="utt"):
            scores[c.speaker].append(judges.quality.score(c.wav))
        for s in speakers:
            table[s]["mos"] = float(np.mean(scores[s]))
        summary["mos"] = float(np.mean([x for v in scores.values() for x in v]))

    summary["checks"] = _checks(summary)
    return {"summary": summary, "speakers": list(table.values()), "config": to_dict(cfg)}


def _checks(summary: dict[str, Any]) -> dict[str, bool | None]:
    """The done-when criteria of the judges (module doc); None when a figure is absent."""
    def at_most(key: str, bound: float) -> bool | None:
        return None if summary.get(key) is None else summary[key] <= bound

    def at_least(key: str, bound: float) -> bool | None:
        return None if summary.get(key) is None else summary[key] >= bound

    return {
        "clean_wer_real_ok": at_most("wer_clean_real", CLEAN_MAX_WER),
        "reversed_wer_ok": at_least("wer_reversed_all", SCRAMBLED_MIN_WER),
        "shuffled_wer_ok": at_least("wer_shuffled_all", SCRAMBLED_MIN_WER),
        "sim_gap_ok": at_least("sim_gap", MIN_SIM_GAP),
    }


def format_report(result: dict[str, Any]) -> str:
    """Markdown: the per-speaker table, then the summary as (figure, value) rows and the checks."""
    rows = result["speakers"]
    cols = [c for c in ("speaker", "engine", "n", "wer_clean", "wer_reversed", "wer_shuffled", "wer_general", "mos") if c in rows[0]]
    figures = [{"figure": k, "value": format_value(k, v)} for k, v in result["summary"].items() if k != "checks"]
    checks = result["summary"]["checks"]
    verdicts = ", ".join(f"{k}={'—' if v is None else ('pass' if v else 'FAIL')}" for k, v in checks.items())
    return markdown_table(rows, cols) + "\n" + markdown_table(figures) + f"\nChecks: {verdicts}\n"
