"""Decoding speed: NTP against MTP g = 3, 6, 12 on one set of backbone weights (paper §2.2, §4.2).

The study's speed claim is that MTP-g needs g times fewer LM steps for the same speech ("up to
12x", §1). This benchmark measures what that buys in wall time, holding everything else equal:

- one backbone (same random weights, dtype, device) shared by every g via ``SLM(backbone=...)``;
  each g adds its own fusion (Eq. 4, MLP) and linear speech head (Eq. 3), the study's best (Table 6);
- the same TTS prompt (the training template), greedy decoding with the study's repetition penalty
  1.2 (Appendix C), the real :class:`~speechlm.inference.generate.Generator` with its KV cache;
- END masked, so every run makes exactly ``seconds`` of frames (K streams at the codec's frame rate);
- runs interleaved (NTP, 3, 6, 12, then rotated) and repeated; medians reported, and the speedup is
  the median of per-repeat *paired* ratios, so a load spike on the shared machine hits both sides.

Reported per (model, g): prefill time, per-step median/p10/p90, steps/s, speech tokens/s, the LM's
real-time factor alone and with codec decode, first-packet latency (prompt to the first
``packet_seconds`` of decoded audio), and the measured speedup over NTP next to the ideal g. The
speedup compares the decoding phase (the prefill is the same work for every g); ``speedup_total``
includes the prefill.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from speechlm import config as cfglib
from speechlm.data.tasks import TaskConfig, TaskFormatter, TextPiece
from speechlm.inference.api import decode_modelled
from speechlm.inference.generate import DecodeState, GenerationConfig, Generator, PromptBatch, PromptItem
from speechlm.layout.speech import LayoutConfig, SpeechLayout
from speechlm.layout.vocab import TEXT_SPECIALS
from speechlm.model.backbone import Backbone, BackboneConfig
from speechlm.model.heads import SlotVocab
from speechlm.model.slm import SLM, SLMConfig
from speechlm.runtime import DTYPES, resolve_device, resolve_dtype, set_threads
from speechlm.text.char import CharTokenizer
from speechlm.tokenizers.base import SpeechTokenizer
from speechlm.tokenizers.registry import TokenizerConfig, build_tokenizer, load_tokenizer

# Backbone shapes (random weights: speed does not depend on their values) and text vocabularies.
MODELS: dict[str, tuple[BackboneConfig, int]] = {
    "tiny": (BackboneConfig(), 128),
    # The demo preset's backbone (configs/slm/demo_*.yaml).
    "demo": (BackboneConfig(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=768), 256),
    # Qwen2.5-0.5B's shape, the study's backbone (§4): 24 layers, D=896, 14 heads / 2 KV heads.
    "qwen0.5b": (
        BackboneConfig(
            hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864,
            max_positions=32768, rope_theta=1_000_000.0,
        ),
        151_936,
    ),
}  # fmt: skip
SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays a slow song"


@dataclass(frozen=True)
class DecodeBenchConfig:
    """``speechlm bench decode`` settings (flags map 1:1)."""

    models: tuple[str, ...] = ("demo",)
    group_sizes: tuple[int, ...] = (1, 3, 6, 12)
    seconds: float = 10.0  # audio generated per run
    repeats: int = 3
    codec: str = ""  # tokenizer folder or codec YAML (random init); "" = FACodec-shaped codes, no decode
    frame_rate: float = 80.0  # without a codec: FACodec's 80 frames/s ...
    codebook_size: int = 1024  # ... 1024-entry codebooks ...
    streams: int = 3  # ... and the study's 3 modelled streams (prosody + 2 content, Appendix E.2)
    packet_seconds: float = 0.2  # audio in the first streamed packet
    device: str = "auto"
    dtype: str = "fp32"  # weights and activations (bf16 on GPUs)
    threads: int = 0  # CPU threads; 0 = all cores
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ValueError(f"unknown model shape(s) {unknown or '(none)'}; choose from {', '.join(MODELS)}")
        if not self.group_sizes or any(g < 1 for g in self.group_sizes):
            raise ValueError(f"group sizes must be >= 1, got {self.group_sizes}")
        if self.seconds <= 0 or self.repeats < 1 or self.packet_seconds <= 0:
            raise ValueError(
                f"seconds ({self.seconds}) and packet_seconds ({self.packet_seconds}) must be > 0, repeats ({self.repeats}) >= 1"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {sorted(DTYPES)}")


@dataclass(frozen=True)
class RunTiming:
    """One generation: what the clock saw."""

    prefill: float  # s
    steps: list[float]  # [steps] s per decoding step
    first_packet: float  # s from the prompt to the first packet of frames generated (codec excluded)
    codec: float  # s to decode all frames to audio (0 without a codec)
    codec_packet: float  # s to decode the first packet

    @property
    def decode(self) -> float:
        return sum(self.steps)


@dataclass
class Case:
    """One (model, g) cell of the benchmark."""

    model: str
    g: int
    generator: Generator
    params: int
    timings: list[RunTiming] = field(default_factory=list)


def run_benchmark(cfg: DecodeBenchConfig, progress: bool = True) -> dict:
    """Run every (model, g) case ``repeats`` times, interleaved; return the JSON report."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    set_threads(cfg.threads or None)
    codec = _codec(cfg.codec, device)
    sizes, frame_rate = _stream_facts(cfg, codec)
    text = CharTokenizer.from_charset("\n" + "".join(chr(c) for c in range(32, 127)), TEXT_SPECIALS)
    frames = _frames(cfg, frame_rate, len(sizes))
    load_before = os.getloadavg()
    report_runs: list[dict] = []
    for name in cfg.models:
        cases = _build_cases(name, cfg, sizes, text, device, dtype, frame_rate)
        prompt = _prompt(text, frames)
        total = len(cases) * (cfg.repeats + 1)
        bar = tqdm(total=total, desc=f"bench decode {name}", disable=not progress)
        for case in cases:  # warm-up: kernels, allocator, caches
            _time_run(case.generator, prompt, codec, cfg, frame_rate, limit_steps=8)
            bar.update()
        for r in range(cfg.repeats):
            for case in cases[r % len(cases) :] + cases[: r % len(cases)]:
                case.timings.append(_time_run(case.generator, prompt, codec, cfg, frame_rate))
                bar.update()
        bar.close()
        report_runs += _summarise(cases, frames / frame_rate, codec is not None)
        del cases
    return {
        "device": _device_name(device),
        "dtype": cfg.dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "config": cfglib.to_dict(cfg),
        "frames": frames,
        "frame_rate": frame_rate,
        "streams": len(sizes),
        "codec": codec.describe() if codec is not None else None,
        "runs": report_runs,
    }


# -- setup ------------------------------------------------------------------------------------------
def _codec(spec: str, device: torch.device) -> SpeechTokenizer | None:
    if not spec:
        return None
    path = Path(spec)
    if path.is_dir():
        return load_tokenizer(path, device=device)
    if not path.is_file():
        raise FileNotFoundError(f"codec not found: {spec} (a tokenizer folder or a codec config YAML)")
    data = cfglib.read_yaml(path)
    tok_cfg = cfglib.from_dict(TokenizerConfig, data.get("tokenizer", data), source=str(path))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_tokenizer(tok_cfg).to(device).eval()


def _stream_facts(cfg: DecodeBenchConfig, codec: SpeechTokenizer | None) -> tuple[tuple[int, ...], float]:
    """Codebook sizes of the modelled streams (the codec's first ``streams``) and the frame rate."""
    if codec is None:
        return (cfg.codebook_size,) * cfg.streams, cfg.frame_rate
    if codec.num_streams < cfg.streams:
        raise ValueError(f"codec {codec.describe()} has {codec.num_streams} streams, fewer than --streams {cfg.streams}")
    return codec.codebook_sizes[: cfg.streams], float(codec.frame_rate)


def _frames(cfg: DecodeBenchConfig, frame_rate: float, K: int) -> int:
    """``seconds`` of frames, rounded up so that every g fills whole groups (same audio for all g)."""
    step = math.lcm(*(g // math.gcd(g, K) for g in cfg.group_sizes))
    frames = math.ceil(cfg.seconds * frame_rate)
    return -(-frames // step) * step


def _build_cases(
    name: str,
    cfg: DecodeBenchConfig,
    sizes: tuple[int, ...],
    text: CharTokenizer,
    device: torch.device,
    dtype: torch.dtype,
    frame_rate: float,
) -> list[Case]:
    shape, vocab = MODELS[name]
    vocab = max(vocab, text.vocab_size)
    torch.manual_seed(cfg.seed)
    backbone = Backbone.build(shape, vocab)
    names = tuple(f"stream{k}" for k in range(len(sizes)))
    gen_cfg = GenerationConfig(stop_at_end=False)
    cases = []
    for g in cfg.group_sizes:
        layout = SpeechLayout(LayoutConfig(streams=tuple(range(len(sizes))), group_size=g), sizes, names)
        model_cfg = SLMConfig(backbone=shape, group_size=g, fusion="mlp", head="linear")
        model = SLM(model_cfg, layout.vocab.size, vocab, SlotVocab.from_layout(layout, g), backbone=backbone)
        model = model.to(device=device, dtype=dtype).eval()
        params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        cases.append(Case(name, g, Generator(model, layout, text, gen_cfg), params))
    return cases


def _prompt(text: CharTokenizer, frames: int) -> PromptBatch:
    """The TTS training template up to "[ua]" (data.tasks), one item, limit = exactly ``frames``."""
    pieces = TaskFormatter(TaskConfig()).prompt("tts", text=SENTENCE)
    ids = [i for p in pieces if isinstance(p, TextPiece) for i in text.encode(p.text)]
    return PromptBatch.from_items([PromptItem(tuple(ids), max_frames=frames)], text.pad_id)


# -- timing -----------------------------------------------------------------------------------------
class _Clock:
    """Marks on the device's timeline: CUDA events on GPUs, ``perf_counter`` on CPUs."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def intervals(self) -> list[float]:
        """Seconds between consecutive marks."""
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def _time_run(
    gen: Generator,
    prompt: PromptBatch,
    codec: SpeechTokenizer | None,
    cfg: DecodeBenchConfig,
    frame_rate: float,
    limit_steps: int | None = None,
) -> RunTiming:
    clock = _Clock(gen.device)
    K, G = gen.layout.num_streams, gen.layout.group_size
    packet_steps = math.ceil(math.ceil(cfg.packet_seconds * frame_rate) * K / G)
    with torch.inference_mode():
        clock.mark()
        state = gen.prefill(prompt)
        clock.mark()
        while not state.done and (limit_steps is None or state.steps < limit_steps):
            gen.step(state)
            clock.mark()
    times = clock.intervals()
    prefill, steps = times[0], times[1:]
    first_packet = prefill + sum(steps[:packet_steps])
    codec_all, codec_packet = _time_codec(gen, state, codec, math.ceil(cfg.packet_seconds * frame_rate))
    return RunTiming(prefill, steps, first_packet, codec_all, codec_packet)


def _time_codec(gen: Generator, state: DecodeState, codec: SpeechTokenizer | None, packet_frames: int) -> tuple[float, float]:
    if codec is None:
        return 0.0, 0.0
    out = gen.finish(state)
    codes, streams = out.codes.to(gen.device), gen.layout.cfg.streams
    speaker = torch.zeros(1, codec.speaker_dim, device=gen.device) if codec.speaker_dim else None

    def decode(n: int) -> Callable[[], object]:
        return lambda: decode_modelled(codec, codes[..., :n], streams, torch.tensor([n], device=gen.device), speaker)

    return _timed(decode(int(out.lengths[0])), gen.device), _timed(decode(min(packet_frames, int(out.lengths[0]))), gen.device)


@torch.inference_mode()
def _timed(fn: Callable[[], object], device: torch.device) -> float:
    clock = _Clock(device)
    clock.mark()
    fn()
    clock.mark()
    return clock.intervals()[0]


# -- report -----------------------------------------------------------------------------------------
def _summarise(cases: list[Case], audio_seconds: float, with_codec: bool) -> list[dict]:
    ntp = next((c for c in cases if c.g == 1), None)
    rows = []
    for case in cases:
        t = case.timings
        prefill = statistics.median(r.prefill for r in t)
        decode = statistics.median(r.decode for r in t)
        codec = statistics.median(r.codec for r in t)
        step_ms = sorted(s * 1000 for r in t for s in r.steps)
        steps = len(t[0].steps)
        row = {
            "model": case.model,
            "params": case.params,
            "g": case.g,
            "audio_seconds": audio_seconds,
            "steps": steps,
            "seconds": prefill + decode,
            "prefill_seconds": prefill,
            "decode_seconds": decode,
            "step_ms": {"median": _quantile(step_ms, 0.5), "p10": _quantile(step_ms, 0.1), "p90": _quantile(step_ms, 0.9)},
            "steps_per_s": steps / decode,
            "speech_tokens_per_s": steps * case.g / decode,
            "rtf": (prefill + decode) / audio_seconds,
            "rtf_with_codec": (prefill + decode + codec) / audio_seconds if with_codec else None,
            "codec_seconds": codec if with_codec else None,
            "first_packet_seconds": statistics.median(r.first_packet + r.codec_packet for r in t),
            "ideal_speedup": float(case.g) if ntp is not None else None,
            "speedup_vs_ntp": None,
            "speedup_total": None,
            "repeats": len(t),
            "decode_seconds_all": [r.decode for r in t],
        }
        if ntp is not None:
            row["speedup_vs_ntp"] = statistics.median(a.decode / b.decode for a, b in zip(ntp.timings, t))
            row["speedup_total"] = statistics.median(
                (a.prefill + a.decode) / (b.prefill + b.decode) for a, b in zip(ntp.timings, t)
            )
        rows.append(row)
    return rows


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted list."""
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def format_table(report: dict) -> str:
    """The readable table printed beside the JSON."""
    head = (
        f"{'model':<9} {'g':>3} {'steps':>6} {'prefill s':>9} {'step ms (p10-p90)':>20} {'steps/s':>8} "
        f"{'tok/s':>8} {'RTF':>6} {'RTF+codec':>9} {'1st pkt s':>9} {'speedup':>8} {'ideal':>5}"
    )
    lines = [f"device: {report['device']} ({report['dtype']}, {report['threads']} threads); "
             f"{report['frames']} frames @ {report['frame_rate']:g} Hz x {report['streams']} streams", head]  # fmt: skip
    for r in report["runs"]:
        s = r["step_ms"]
        codec = f"{r['rtf_with_codec']:.3f}" if r["rtf_with_codec"] is not None else "-"
        speedup = f"{r['speedup_vs_ntp']:.2f}x" if r["speedup_vs_ntp"] is not None else "-"
        lines.append(
            f"{r['model']:<9} {r['g']:>3} {r['steps']:>6} {r['prefill_seconds']:>9.3f} "
            f"{s['median']:>7.2f} ({s['p10']:.2f}-{s['p90']:.2f}) {r['steps_per_s']:>8.1f} "
            f"{r['speech_tokens_per_s']:>8.0f} {r['rtf']:>6.3f} {codec:>9} {r['first_packet_seconds']:>9.3f} "
            f"{speedup:>8} {r['ideal_speedup'] or 0:>5.0f}"
        )
    return "\n".join(lines)
