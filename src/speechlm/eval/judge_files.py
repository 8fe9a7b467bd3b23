"""``speechlm judge {asr,speaker,mos} WAV... [--json OUT]``: one judge over audio files.

Output (DESIGN.md §8): ``{"judge": NAME, "items": [{"audio", "text" | "embedding" | "mos"}]}``.
A file that cannot be read or judged gets ``"error"`` instead of its figure and the run goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from speechlm.audio import AudioError, load_audio
from speechlm.eval.judges import JUDGE_SAMPLE_RATE, AsrConfig, JudgesConfig, QualityConfig, SpeakerConfig, build_judges

JudgeKind = Literal["asr", "speaker", "mos"]
_FIELD = {"asr": "text", "speaker": "embedding", "mos": "mos"}


def judge_files(
    kind: JudgeKind, paths: Sequence[str | Path], cfg: JudgesConfig = JudgesConfig(), corpus_dir: str | Path | None = None
) -> dict[str, Any]:
    """Run the ``kind`` judge of ``cfg`` over ``paths`` (the domain ASR LM needs ``corpus_dir``)."""
    if kind not in _FIELD:
        raise ValueError(f"unknown judge {kind!r}; expected one of {sorted(_FIELD)}")
    if not paths:
        raise ValueError("no audio files given")
    if kind == "asr" and corpus_dir is None and cfg.asr.kind == "pocketsphinx":
        # Without a corpus there is no domain LM: fall back to the general-English LM.
        cfg = replace(cfg, asr=replace(cfg.asr, pocketsphinx=replace(cfg.asr.pocketsphinx, lm="general")))
    cfg = replace(  # build only the judge asked for
        cfg,
        asr=cfg.asr if kind == "asr" else AsrConfig(kind="none"),
        speaker=cfg.speaker if kind == "speaker" else SpeakerConfig(kind="none"),
        quality=cfg.quality if kind == "mos" else QualityConfig(kind="none"),
    )
    judges = build_judges(cfg, corpus_dir)
    if kind == "asr":
        judge, apply = judges.asr, judges.asr.transcribe
    elif kind == "speaker":
        judge, apply = judges.speaker, lambda wav: judges.speaker.embed(wav).tolist()
    else:
        judge, apply = judges.quality, judges.quality.score
    items = []
    for path in tqdm(paths, desc=judge.name, unit="file"):
        item: dict[str, Any] = {"audio": str(path)}
        try:
            item[_FIELD[kind]] = apply(load_audio(path, JUDGE_SAMPLE_RATE).wav)
        except (AudioError, FileNotFoundError) as err:
            item["error"] = str(err)
        items.append(item)
    return {"judge": judge.name, "items": items}


def format_results(result: dict[str, Any]) -> str:
    """One line per file: the transcript, the MOS, or the embedding's size."""
    lines = [f"judge: {result['judge']}"]
    for item in result["items"]:
        if "error" in item:
            value = f"ERROR {item['error']}"
        elif "embedding" in item:
            value = f"embedding [{len(item['embedding'])}]"
        elif "mos" in item:
            value = f"mos {item['mos']:.3f}"
        else:
            value = repr(item["text"])
        lines.append(f"{item['audio']}\t{value}")
    return "\n".join(lines)

