"""`speechlm <verb>`: parse arguments, build configs, call the library. No logic lives here.

Library modules are imported inside each command so that `speechlm --help` stays fast and a
verb's heavy dependencies (transformers, onnxruntime, ...) load only when it runs.
Verbs per DESIGN.md §8.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from speechlm.cli_codec import add_codec


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from speechlm.data.synth import synthesize_corpus

    summary = synthesize_corpus(args.preset, Path(args.out), seed=args.seed, workers=args.workers)
    print(summary.format())
    return 0 if summary.ok else 1


def _cmd_data_check(args: argparse.Namespace) -> int:
    from speechlm.data.check import check_corpus

    report = check_corpus(Path(args.dir))
    print(report.format())
    if args.json:
        report.write_json(Path(args.json))
    return 0 if report.ok else 1


def _cmd_data_convert(args: argparse.Namespace) -> int:
    from speechlm.data.official import convert_file

    n = convert_file(Path(args.src), Path(args.dst), heads=args.heads)
    print(f"wrote {n} rows with {args.heads} heads to {args.dst}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from speechlm.demo import run_demo

    return run_demo(Path(args.out))


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="built-in corpus, corpus checks, reference-format conversion")
    verbs = data.add_subparsers(dest="data_verb", required=True)

    p = verbs.add_parser("synth", help="synthesise the built-in multi-speaker corpus + spoken QA")
    p.add_argument("--preset", choices=["tiny", "demo", "large"], default="tiny")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="parallel synthesis processes (default: cores)")
    p.set_defaults(func=_cmd_data_synth)

    p = verbs.add_parser("check", help="validate a corpus folder; list every bad item")
    p.add_argument("dir")
    p.add_argument("--json", default=None, help="also write the report as JSON")
    p.set_defaults(func=_cmd_data_check)

    p = verbs.add_parser("convert", help="convert the reference code's NTP/MTP JSONL between head counts")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--heads", type=int, choices=[1, 3, 6, 12], required=True)
    p.set_defaults(func=_cmd_data_convert)


def _cmd_train(args: argparse.Namespace) -> int:
    from speechlm.train.config import load_train_config
    from speechlm.train.loop import train

    train(load_train_config(args.config, args.overrides), resume=args.resume)  # prints its summary
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the SLM (stage 1 TTS+ASR or stage 2 role-QA) from a configs/slm/*.yaml")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="a.b=c config overrides")
    p.add_argument("--resume", action="store_true", help="continue exactly from the run's newest checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("ship", help="write a trained SLM as a shipped model: fp16 weights, voices, model card")
    p.add_argument("run", help="run (or checkpoint) folder written by `speechlm train`")
    p.add_argument("--out", required=True, help="folder to write (replaced), e.g. checkpoints/slm/default")
    p.add_argument("--codec", default=None, help="shipped codec folder to point the config at (must be the one trained on)")
    p.add_argument("--eval", default=None, help="`speechlm eval` JSON whose figures go into the model card")
    p.add_argument("--note", default="", help="a paragraph for the model card")
    p.set_defaults(func=_cmd_ship)


def _cmd_ship(args: argparse.Namespace) -> int:
    from speechlm.train.ship import ship_model, shipped_size

    out = ship_model(args.run, args.out, codec=args.codec, eval_json=args.eval, note=args.note)
    print(f"shipped {args.run} -> {out} ({shipped_size(out) / 1e6:.1f} MB)")
    return 0


def _synthesizer(args: argparse.Namespace):
    from speechlm import config as cfglib
    from speechlm.assets import DEFAULT_SLM, default_slm
    from speechlm.inference.api import Synthesizer
    from speechlm.inference.generate import GenerationConfig
    from speechlm.runtime import set_threads

    model = args.model or default_slm()
    if model is None:
        raise ValueError(f"no --model given and this checkout has no shipped default model at {DEFAULT_SLM}")
    set_threads(args.threads)
    generation = cfglib.from_dict(GenerationConfig, cfglib.parse_overrides(args.gen), source="--gen")
    return Synthesizer.load(model, device=args.device, generation=generation, batch_size=args.batch_size)


def _cmd_tts(args: argparse.Namespace) -> int:
    from speechlm.audio import save_audio
    from speechlm.inference.batch import synthesize_file

    if (args.text is None) == (args.file is None):
        raise ValueError('give either a text ("speechlm tts TEXT -o OUT.wav") or --file TEXTS.txt --out-dir DIR')
    if (args.file is None and not args.output) or (args.file is not None and not args.out_dir):
        raise ValueError("a text needs -o OUT.wav; --file needs --out-dir DIR")
    synth = _synthesizer(args)
    voice = synth.voice(args.speaker, args.ref)
    if args.file is not None:
        report = synthesize_file(synth, args.file, args.out_dir, voice)
        print(report.format())
        return 0 if not report.failed else 1
    [result] = synth.tts([args.text], voice)
    if not result.wav.size:
        raise ValueError("the model produced no speech (END at the first step)")
    save_audio(args.output, result.wav, result.sample_rate)
    state = "finished" if result.finished else "cut at the length limit (no END)"
    print(f"{args.output}: {result.audio_seconds:.2f} s, speaker {voice.name or '-'}, {state}")
    return 0 if result.finished else 1


def _cmd_ask(args: argparse.Namespace) -> int:
    from speechlm.audio import save_audio

    synth = _synthesizer(args)
    [result] = synth.ask([args.question], synth.voice(args.role, args.ref))
    print(result.text)
    if not result.wav.size:
        raise ValueError("the model produced no speech for its answer (END at the first step)")
    save_audio(args.output, result.wav, result.sample_rate)
    state = "finished" if result.finished else "cut at the length limit (no END)"
    print(f"{args.output}: {result.audio_seconds:.2f} s, speaker {result.speaker or '-'}, {state}", file=sys.stderr)
    return 0 if result.finished else 1


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint (or run) folder written by `speechlm train` (default: the shipped checkpoints/slm/default)")
    p.add_argument("--ref", default=None, help="reference recording whose voice to use (needs a codec with a timbre encoder)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--batch-size", type=int, default=8, help="utterances decoded together")
    p.add_argument("--gen", action="append", default=[], metavar="KEY=VALUE",
                   help="GenerationConfig override, e.g. sampling.repetition_penalty=1.0 (repeatable)")  # fmt: skip


def _add_inference(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tts", help="text -> speech with a trained SLM (one text, or --file with one per line)")
    p.add_argument("text", nargs="?", default=None)
    p.add_argument("-o", "--output", default=None, help="output wav (single text)")
    p.add_argument("--file", default=None, help="text file, one utterance per line")
    p.add_argument("--out-dir", default=None, help="--file: folder for audio/*.wav + manifest.jsonl")
    p.add_argument("--speaker", default=None, help="a speaker name from the model's speaker table")
    _add_generation_args(p)
    p.set_defaults(func=_cmd_tts)

    p = sub.add_parser("ask", help="spoken QA: print the text answer and write the spoken answer")
    p.add_argument("question")
    p.add_argument("-o", "--output", required=True, help="output wav")
    p.add_argument("--role", default=None, help="the voice to answer in (a speaker name of the model)")
    _add_generation_args(p)
    p.set_defaults(func=_cmd_ask)


def _cmd_bench_decode(args: argparse.Namespace) -> int:
    import json

    from speechlm.bench.decode import DecodeBenchConfig, format_table, run_benchmark

    cfg = DecodeBenchConfig(
        models=tuple(m for m in args.models.split(",") if m),
        group_sizes=tuple(int(g) for g in args.group_sizes.split(",") if g),
        seconds=args.seconds,
        repeats=args.repeats,
        codec=args.codec,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
    )
    report = run_benchmark(cfg)
    print(format_table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="speed benchmarks")
    verbs = bench.add_subparsers(dest="bench_verb", required=True)
    p = verbs.add_parser("decode", help="NTP vs MTP decoding speed on one set of backbone weights")
    p.add_argument("--json", default=None, help="write the report as JSON")
    p.add_argument("--models", default="demo", help="comma-separated: tiny, demo, qwen0.5b")
    p.add_argument("--group-sizes", default="1,3,6,12", help="comma-separated g values (1 = NTP)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio generated per run")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats per case")
    p.add_argument("--codec", default="", help="tokenizer folder or codec YAML (adds codec decode to RTF/latency)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    p.set_defaults(func=_cmd_bench_decode)


def _cmd_eval(args: argparse.Namespace) -> int:
    from speechlm.config import load
    from speechlm.eval.evaluate import evaluate_model, format_table, no_judges, write_report
    from speechlm.eval.judges import JudgesConfig, build_judges

    synth = _synthesizer(args)
    judges = no_judges() if args.no_judges else build_judges(load(JudgesConfig, args.judges), Path(args.data))
    out = Path(args.json)
    audio_dir = Path(args.audio_dir) if args.audio_dir else out.with_name(out.stem + "_audio")
    kinds = tuple(k for k in args.kinds.split(",") if k)
    report = evaluate_model(synth, Path(args.data), audio_dir, judges, split=args.split, kinds=kinds, limit=args.limit)
    report["command"] = args.command
    write_report(report, out)
    print(format_table(report["summary"]))
    print(f"report: {out} (+ {out.with_suffix('.md')}); audio: {audio_dir}")
    return 0


def _cmd_align(args: argparse.Namespace) -> int:
    import json

    from speechlm.eval.model_alignment import align_checkpoint, format_alignment
    from speechlm.runtime import set_threads

    set_threads(args.threads)
    layers = [int(x) for x in args.layers.split(",") if x] if args.layers else None
    report = align_checkpoint(args.ckpt, args.data, split=args.split, layers=layers, limit=args.limit, plot=args.plot, device=args.device)
    report["command"] = args.command
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(format_alignment(report))
    return 0


def _cmd_textgain(args: argparse.Namespace) -> int:
    import json

    from speechlm.eval.text_gain import format_text_gain, text_gain_checkpoint
    from speechlm.runtime import set_threads

    set_threads(args.threads)
    report = text_gain_checkpoint(args.ckpt, args.data, split=args.split, limit=args.limit, device=args.device)
    report["command"] = args.command
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(format_text_gain(report))
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from speechlm.eval.study import load_study, rejudge_study, run_study, text_gain_study

    study = load_study(args.config, args.overrides)
    only = [c for c in args.cells.split(",") if c] if args.cells else []
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s] if args.seeds else []
    except ValueError:
        raise SystemExit(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if args.rejudge and args.text_gain:
        raise SystemExit("give --rejudge or --text-gain, not both")
    if args.rejudge:
        report = rejudge_study(study, Path(args.out), only=only, seeds=seeds)
    elif args.text_gain:
        report = text_gain_study(study, Path(args.out), only=only, seeds=seeds)
    else:
        report = run_study(study, Path(args.out), only=only, seeds=seeds)
    print(f"report: {Path(args.out) / 'report.md'} ({report['runs']} runs; {len(report['missing'])} not run yet)")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="generate on a corpus split with a trained SLM and judge it: SR, WER, SIM, MOS, RTF, EM/F1")
    p.add_argument("model", metavar="CKPT", help="checkpoint (or run) folder written by `speechlm train`")
    p.add_argument("--data", required=True, help="corpus folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", required=True, help="report JSON (a markdown table is written beside it as .md)")
    p.add_argument("--limit", type=int, default=0, help="evaluate the first N rows of each kind, of each QA domain (0 = all)")
    p.add_argument("--kinds", default="tts,qa", help="comma-separated: tts (Tables 1/2), qa (Table 3), text_qa (text-only baseline)")
    p.add_argument("--audio-dir", default=None, help="where the generated wavs go (default: beside the JSON)")
    p.add_argument("--no-judges", action="store_true", help="success rate, RTF and EM/F1 only (no ASR/speaker/MOS)")
    p.add_argument("--judges", default=None, help="judges YAML (default: the offline judges; see configs/eval/judges.yaml)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--batch-size", type=int, default=8, help="utterances decoded together")
    p.add_argument("--gen", action="append", default=[], metavar="KEY=VALUE", help="GenerationConfig override (repeatable)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("align", help="cross-modal alignment of text/speech hidden states (study Table 4, Figure 5)")
    p.add_argument("ckpt", help="checkpoint (or run) folder written by `speechlm train`")
    p.add_argument("--data", required=True, help="corpus folder (TTS rows are run teacher-forced)")
    p.add_argument("--json", required=True, help="write the metrics per layer as JSON")
    p.add_argument("--plot", default=None, help="also write UMAP panels (PNG) of the chosen layers")
    p.add_argument("--layers", default=None, help="comma-separated layer indices (0 = embeddings, -1 = last); default: 0, middle, last")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=64, help="use the first N TTS rows (0 = all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_cmd_align)

    p = sub.add_parser("textgain", help="how much the model's speech uses its text: teacher-forced NLL, own vs another sentence")
    p.add_argument("ckpt", help="checkpoint (or run) folder written by `speechlm train`")
    p.add_argument("--data", required=True, help="corpus folder (TTS rows are scored teacher-forced)")
    p.add_argument("--json", default=None, help="also write the figures as JSON")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, default=64, help="N TTS rows at an even stride over the split (0 = all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_cmd_textgain)

    p = sub.add_parser("study", help="a grid of SLM runs under one budget -> report with the study's tables + plots")
    p.add_argument("config", help="a configs/study/*.yaml")
    p.add_argument("overrides", nargs="*", help="a.b=c study-config overrides (e.g. steps=50)")
    p.add_argument("--out", required=True, help="results folder: cells/<cell>/seed<k>.json, report.md, report.json, plots")
    p.add_argument("--cells", default=None, help="comma-separated cell names to run now (default: all); finished ones are skipped")
    p.add_argument("--seeds", default=None, help="comma-separated seeds to run now (default: each cell's seeds)")
    p.add_argument("--rejudge", action="store_true", help="re-score finished cells' kept audio with the current judges")
    p.add_argument("--text-gain", action="store_true", help="add the text gain to finished cells that lack it (from their checkpoints)")
    p.set_defaults(func=_cmd_study)


def _judges_config(args: argparse.Namespace):
    from speechlm.config import load
    from speechlm.eval.judges import JudgesConfig

    return load(JudgesConfig, args.config, args.overrides)


def _cmd_judge_files(args: argparse.Namespace) -> int:
    from speechlm.eval.judge_files import format_results, judge_files
    from speechlm.eval.report import write_json

    result = judge_files(args.judge_verb, args.wavs, _judges_config(args), args.corpus)
    print(format_results(result))
    if args.json:
        write_json(result, Path(args.json))
    return 0 if all("error" not in item for item in result["items"]) else 1


def _cmd_judge_score(args: argparse.Namespace) -> int:
    from speechlm.eval.judges import build_judges
    from speechlm.eval.report import summary_table
    from speechlm.eval.runner import evaluate_manifest

    result = evaluate_manifest(Path(args.manifest), build_judges(_judges_config(args), args.corpus))
    print(summary_table(result.summary))
    if args.json:
        print(f"report: {result.write(Path(args.json))}")
    return 0


def _cmd_judge_calibrate(args: argparse.Namespace) -> int:
    from speechlm.config import load
    from speechlm.eval.calibrate import CalibrationConfig, calibrate, format_report
    from speechlm.eval.report import write_json

    overrides = [*args.overrides, f"split={args.split}"] if args.split else args.overrides
    result = calibrate(Path(args.corpus), load(CalibrationConfig, args.config, overrides))
    result["command"] = args.command
    print(format_report(result))
    if args.json:
        write_json(result, Path(args.json))
    return 0


def _cmd_judge_adapt(args: argparse.Namespace) -> int:
    from speechlm.config import load
    from speechlm.eval.judges.adapt import MANIFEST, AdaptConfig, adapt_acoustic_model

    out = adapt_acoustic_model(Path(args.corpus), Path(args.out), load(AdaptConfig, args.config, args.overrides), work=args.work)
    print(f"adapted acoustic model: {out} (use it with asr.pocketsphinx.acoustic_model={out}; details in {out / MANIFEST})")
    return 0


def _add_judge(sub: argparse._SubParsersAction) -> None:
    judge = sub.add_parser("judge", help="the judges on their own: ASR, speaker, MOS; scoring a manifest; calibration")
    verbs = judge.add_subparsers(dest="judge_verb", required=True)
    for name, what in (("asr", "transcribe"), ("speaker", "speaker embedding of"), ("mos", "MOS of")):
        p = verbs.add_parser(name, help=f"{what} each WAV")
        p.add_argument("wavs", nargs="+", metavar="WAV")
        p.add_argument("--corpus", default=None, help="corpus folder: the ASR judge uses its domain LM (else general English)")
        p.add_argument("--json", default=None, help='write {"judge", "items": [...]} here')
        p.add_argument("--config", default=None, help="judges YAML (default: built-in offline judges; see configs/eval/judges.yaml)")
        p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help="judges-config overrides, e.g. asr.kind=whisper asr.path=DIR")
        p.set_defaults(func=_cmd_judge_files)

    p = verbs.add_parser("score", help="SR, WER, SIM (seen/unseen), MOS, RTF, EM/F1 of generated audio listed in a JSONL manifest")
    p.add_argument("manifest", help="JSONL rows {id, text, audio, ref_audio, seen, finished, seconds, pred_answer, gold_answer}")
    p.add_argument("--corpus", default=None, help="corpus folder for the domain-LM ASR judge")
    p.add_argument("--json", default=None, help="report JSON (a markdown table goes beside it as .md)")
    p.add_argument("--config", default=None, help="judges YAML (configs/eval/judges.yaml)")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_judge_score)

    p = verbs.add_parser("calibrate", help="judge WER/SIM/MOS on a corpus's ground truth, incl. scrambled-audio checks")
    p.add_argument("--corpus", required=True, help="corpus folder made by `speechlm data synth`")
    p.add_argument("--split", default=None, choices=["train", "val", "test"], help="(default: the config's, test)")
    p.add_argument("--json", default=None, help="write the calibration report here")
    p.add_argument("--config", default=None, help="configs/eval/calibrate.yaml")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help="e.g. max_per_speaker=5 judges.asr.pocketsphinx.order=4")
    p.set_defaults(func=_cmd_judge_calibrate)

    p = verbs.add_parser("adapt", help="adapt the ASR judge's acoustic model to a corpus's train voices (needs sphinxtrain)")
    p.add_argument("--corpus", required=True, help="corpus folder made by `speechlm data synth`")
    p.add_argument("--out", required=True, help="folder for the adapted files, e.g. checkpoints/asr_judge/demo")
    p.add_argument("--config", default=None, help="configs/eval/adapt.yaml")
    p.add_argument("--work", default=None, help="keep the intermediate files (features, bw counts, logs) here")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help="e.g. method=mllr max_per_speaker=50")
    p.set_defaults(func=_cmd_judge_adapt)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechlm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    _add_data(sub)
    add_codec(sub)
    _add_train(sub)
    _add_inference(sub)
    _add_bench(sub)
    _add_eval(sub)
    _add_judge(sub)

    p = sub.add_parser("demo", help="the main job on the built-in defaults")
    p.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["speechlm", *argv])  # what reports record as the command that made them
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # User errors (bad config key, missing file, corrupt audio ...): one clear line, exit 2.
        print(f"speechlm: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
