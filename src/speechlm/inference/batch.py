"""Batch TTS: a text file (one utterance per line) -> wavs + ``manifest.jsonl`` (DESIGN.md §8).

Each line becomes ``DIR/audio/<id>.wav`` and one manifest row
``{"id", "text", "audio", "speaker", "audio_seconds", "finished"}`` in input order. A line that cannot
be spoken (empty, or characters the text tokenizer cannot encode) is skipped and reported: its row
has ``audio: null``, ``finished: false`` and an ``error`` (DESIGN.md §7 -- never silently dropped,
never fatal). Lines are batched by length so that lock-step decoding wastes few steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from speechlm.audio import save_audio
from speechlm.inference.api import SpeechResult, Synthesizer, Voice

MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class BatchReport:
    manifest: Path
    rows: list[dict]

    @property
    def failed(self) -> list[dict]:
        return [row for row in self.rows if not row["finished"]]

    def format(self) -> str:
        seconds = sum(row["audio_seconds"] for row in self.rows)
        lines = [f"{len(self.rows)} utterances, {seconds:.1f} s of audio -> {self.manifest}"]
        for row in self.failed:
            lines.append(f"  not finished: {row['id']}: {row.get('error') or 'cut at the length limit (no END)'}")
        return "\n".join(lines)


def read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise ValueError(f"{path} has no lines to synthesise")
    return lines


def synthesize_file(synth: Synthesizer, texts: str | Path, out_dir: str | Path, voice: Voice, progress: bool = True) -> BatchReport:
    """Speak every line of ``texts`` into ``out_dir``; see the module docstring."""
    lines = read_lines(texts)
    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(lines) - 1)))
    ids = [f"{i:0{width}d}" for i in range(len(lines))]
    rows: dict[int, dict] = {}
    good: list[int] = []
    for i, line in enumerate(lines):
        try:
            synth.prompt("tts", line, voice)
            good.append(i)
        except ValueError as err:
            rows[i] = _row(ids[i], line, voice, None, error=str(err))
    good.sort(key=lambda i: len(lines[i]))
    bar = tqdm(total=len(good), desc="tts", unit="utt", disable=not progress)
    for start in range(0, len(good), synth.batch_size):
        chunk = good[start : start + synth.batch_size]
        for i, result in zip(chunk, synth.tts([lines[i] for i in chunk], voice)):
            audio = None
            if len(result.wav):
                save_audio(out_dir / "audio" / f"{ids[i]}.wav", result.wav, result.sample_rate)
                audio = f"audio/{ids[i]}.wav"
            rows[i] = _row(ids[i], line=lines[i], voice=voice, result=result, audio=audio)
        bar.update(len(chunk))
    bar.close()
    ordered = [rows[i] for i in range(len(lines))]
    manifest = out_dir / MANIFEST
    tmp = manifest.with_name(MANIFEST + ".tmp")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ordered), encoding="utf-8")
    tmp.replace(manifest)
    return BatchReport(manifest, ordered)


def _row(
    utt_id: str, line: str, voice: Voice, result: SpeechResult | None, audio: str | None = None, error: str = ""
) -> dict:
    row = {
        "id": utt_id,
        "text": line,
        "audio": audio,
        "speaker": voice.name or None,
        "audio_seconds": round(result.audio_seconds, 4) if result is not None else 0.0,
        "finished": bool(result is not None and result.finished),
    }
    if error:
        row["error"] = error
    elif result is not None and not result.wav.size:
        row["error"] = "the model produced no speech frame (END at the first step)"
    return row
