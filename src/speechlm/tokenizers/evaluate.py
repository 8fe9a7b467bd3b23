"""Codec resynthesis evaluation (study App. A.2, Table 5): ``speechlm codec eval CKPT --data DIR``.

Each test utterance is encoded and decoded; the resynthesis is compared with the original:
STOI and PESQ (signal fidelity), ASR-judge WER on the resynthesis beside the WER of the same judge
on the original audio (``wer_ground_truth`` — the floor a codec can reach on this data), speaker
similarity (cosine of judge embeddings, original vs resynthesis), and MOS of the resynthesis beside
that of the original. Token rate and bitrate come from the tokenizer; the real-time factor is the
encode + decode wall time over the audio duration, one utterance at a time.

Output JSON: ``{"summary": {stoi, pesq, wer, wer_ground_truth, sim, mos, mos_ground_truth, mos_judge,
rtf, token_rate, bitrate, ...}, "items": [...]}`` (DESIGN.md §8); a figure that could not be
measured is ``null``, never 0. Items whose audio cannot be read are skipped and listed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speechlm.audio import AudioError, load_audio, resample, save_audio
from speechlm.data.manifest import Corpus, Utterance, spread
from speechlm.eval import metrics
from speechlm.tokenizers.base import SpeechTokenizer

JUDGE_SAMPLE_RATE = 16_000  # every judge takes 16 kHz audio (DESIGN.md §4)


@dataclass
class ItemResult:
    id: str
    speaker: str
    seconds: float  # audio duration
    text: str
    stoi: float | None = None
    pesq: float | None = None
    hyp: str | None = None  # ASR judge on the resynthesis
    hyp_ground_truth: str | None = None  # ASR judge on the original
    sim: float | None = None
    mos: float | None = None
    mos_ground_truth: float | None = None


@dataclass(frozen=True)
class Judges:
    """The three judges of ``speechlm.eval.judges`` (any may be None to skip that figure)."""

    asr: Any = None
    speaker: Any = None
    quality: Any = None

    @classmethod
    def default(cls, corpus_dir: Path) -> Judges:
        """Offline defaults: pocketsphinx with the corpus's domain LM, resemblyzer, DNSMOS."""
        from speechlm.eval.judges import AsrJudge, QualityJudge, SpeakerJudge

        return cls(asr=AsrJudge.default(corpus_dir), speaker=SpeakerJudge.default(), quality=QualityJudge.default())


def resynthesize(tok: SpeechTokenizer, wav: np.ndarray, streams: tuple[int, ...] | None = None) -> tuple[np.ndarray, float]:
    """One utterance through encode + decode -> (resynthesis cut to the input length, seconds taken).

    ``streams`` decodes only those streams (``decode_streams``: e.g. the SLM's prosody + content
    streams of the decoupled codec, study App. E.2); None decodes them all.
    """
    x = torch.from_numpy(wav)[None].to(next(tok.parameters()).device)
    n = torch.tensor([wav.shape[0]], device=x.device)
    start = time.perf_counter()
    enc = tok.encode(x, n)
    if streams is None:
        dec = tok.decode(enc.codes, enc.lengths, enc.speaker)
    else:
        dec = tok.decode_streams(enc.codes[:, list(streams)], streams, enc.lengths, enc.speaker)
    seconds = time.perf_counter() - start
    return dec.wav[0, : wav.shape[0]].float().cpu().numpy(), seconds


def judge_item(item: ItemResult, ref: np.ndarray, deg: np.ndarray, judges: Judges) -> list[str]:
    """Fill the judge-based fields of ``item`` (``ref``/``deg`` at 16 kHz); returns the judges' refusals.

    A judge that refuses a clip (e.g. the speaker VAD finds no speech in a broken resynthesis)
    leaves its field ``None`` — that item is then left out of that figure, and the refusal is reported.
    """
    errors = []
    try:
        if judges.asr is not None:
            item.hyp, item.hyp_ground_truth = judges.asr.transcribe(deg), judges.asr.transcribe(ref)
    except AudioError as err:
        errors.append(f"asr: {err}")
    try:
        if judges.speaker is not None:
            item.sim = metrics.cosine(judges.speaker.embed(ref), judges.speaker.embed(deg))
    except AudioError as err:
        errors.append(f"speaker: {err}")
    try:
        if judges.quality is not None:
            item.mos, item.mos_ground_truth = judges.quality.score(deg), judges.quality.score(ref)
    except AudioError as err:
        errors.append(f"quality: {err}")
    return errors


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(tok: SpeechTokenizer, items: list[ItemResult], codec_seconds: float, judges: Judges) -> dict[str, Any]:
    audio_seconds = sum(i.seconds for i in items)
    asr_done = [i for i in items if i.hyp is not None]
    return {
        "stoi": _mean([i.stoi for i in items]),
        "pesq": _mean([i.pesq for i in items]),
        "wer": metrics.wer([i.text for i in asr_done], [i.hyp for i in asr_done]) if asr_done else None,
        "wer_ground_truth": (
            metrics.wer([i.text for i in asr_done], [i.hyp_ground_truth for i in asr_done]) if asr_done else None
        ),
        "sim": _mean([i.sim for i in items]),
        "mos": _mean([i.mos for i in items]),
        "mos_ground_truth": _mean([i.mos_ground_truth for i in items]),
        "mos_judge": getattr(judges.quality, "name", None),
        "asr_judge": getattr(judges.asr, "name", None),
        "speaker_judge": getattr(judges.speaker, "name", None),
        "rtf": metrics.rtf(codec_seconds, audio_seconds) if items else None,
        "token_rate": tok.token_rate,
        "bitrate": tok.bitrate,
        "frame_rate": tok.frame_rate,
        "streams": len(tok.streams),
        "items": len(items),
        "audio_seconds": audio_seconds,
        "threads": torch.get_num_threads(),
    }


def evaluate_codec(
    tok: SpeechTokenizer,
    corpus_dir: Path,
    split: str = "test",
    judges: Judges | None = None,
    max_items: int = 0,
    audio_dir: Path | None = None,
    streams: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Resynthesis figures over the corpus's TTS ``split``; see the module docstring for the keys.

    ``streams``: decode only these streams (see :func:`resynthesize`); the summary names them.
    """
    if streams is not None and not hasattr(tok, "decode_streams"):
        raise ValueError(f"{tok.describe()} cannot decode a subset of its streams (no decode_streams)")
    corpus = Corpus.open(corpus_dir)
    rows: list[Utterance] = corpus.tts(split)
    rows = spread(rows, max_items)
    if not rows:
        raise ValueError(f"corpus {corpus_dir} has no '{split}' TTS utterances to evaluate")
    judges = judges if judges is not None else Judges()
    tok.eval()
    resynthesize(tok, np.zeros(tok.sample_rate // 2, dtype=np.float32), streams)  # warm-up: keep one-off costs out of the RTF
    items, skipped, codec_seconds = [], [], 0.0
    for row in tqdm(rows, desc=f"codec eval ({split})"):
        try:
            ref = load_audio(corpus.audio_path(row), sample_rate=tok.sample_rate).wav
        except (AudioError, FileNotFoundError) as err:
            skipped.append({"id": row.id, "error": str(err)})
            continue
        deg, seconds = resynthesize(tok, ref, streams)
        codec_seconds += seconds
        item = ItemResult(id=row.id, speaker=row.speaker, seconds=len(ref) / tok.sample_rate, text=row.text)
        item.stoi = metrics.stoi(ref, deg, tok.sample_rate)
        item.pesq = _pesq_or_none(ref, deg, tok.sample_rate)
        jref, jdeg = (resample(x, tok.sample_rate, JUDGE_SAMPLE_RATE) for x in (ref, deg))
        skipped += [{"id": row.id, "error": e} for e in judge_item(item, jref, jdeg, judges)]
        if audio_dir is not None:
            save_audio(Path(audio_dir) / f"{row.id}.wav", deg, tok.sample_rate)
        items.append(item)
    summary = summarize(tok, items, codec_seconds, judges)
    summary["decoded_streams"] = list(streams) if streams is not None else list(range(len(tok.streams)))
    report = {"summary": summary, "items": [asdict(i) for i in items]}
    report["skipped"] = skipped
    return report


def _pesq_or_none(ref: np.ndarray, deg: np.ndarray, sr: int) -> float | None:
    try:
        return metrics.pesq(ref, deg, sr)
    except AudioError:  # PESQ refuses e.g. references with no detectable speech
        return None


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)


def format_summary(summary: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    keys = ("stoi", "pesq", "wer", "wer_ground_truth", "sim", "mos", "mos_ground_truth", "rtf", "token_rate", "bitrate")
    return "\n".join(f"{k:>18}: {fmt(summary.get(k))}" for k in keys)
