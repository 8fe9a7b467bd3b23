"""`speechlm codec <verb>`: train, evaluate, probe, ship and run speech tokenizers (see cli.py).

Like cli.py, this module only parses arguments and calls the library (`speechlm.tokenizers`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


# Checked by the library (tokenizers/storage.py); not imported here, to keep argument parsing torch-free.
_STORAGE_HELP = "weights on disk: fp32, fp16 or fp16-int8dec (int8 decoder weights; codes unchanged)"


def _cmd_codec_train(args: argparse.Namespace) -> int:
    from speechlm.config import load, read_yaml
    from speechlm.tokenizers.train import CodecTrainConfig, train_codec

    if "teacher" in read_yaml(args.config):  # the semantic teacher's own recipe (tokenizers/teacher_train.py)
        from speechlm.tokenizers.teacher_train import TeacherTrainConfig, train_teacher

        result = train_teacher(load(TeacherTrainConfig, args.config, args.overrides))
        print(f"teacher: {result.out} ({result.seconds / 60:.1f} min)")
        return 0
    ckpt = train_codec(load(CodecTrainConfig, args.config, args.overrides), resume=args.resume)
    print(f"checkpoint: {ckpt}")
    return 0


def _cmd_codec_eval(args: argparse.Namespace) -> int:
    from speechlm.runtime import set_threads
    from speechlm.tokenizers.evaluate import Judges, evaluate_codec, format_summary, write_report
    from speechlm.tokenizers.registry import load_tokenizer

    set_threads(args.threads)
    tok = load_tokenizer(args.ckpt)
    judges = Judges() if args.no_judges else Judges.default(Path(args.data))
    audio_dir = Path(args.audio_dir) if args.audio_dir else None
    streams = tuple(int(k) for k in args.streams.split(",")) if args.streams else None
    report = evaluate_codec(tok, Path(args.data), args.split, judges, args.max_items, audio_dir, streams)
    report["command"] = args.command
    print(format_summary(report["summary"]))
    if args.json:
        write_report(report, Path(args.json))
    return 0


def _cmd_codec_encode(args: argparse.Namespace) -> int:
    from speechlm.tokenizers.files import encode_file
    from speechlm.tokenizers.registry import load_tokenizer

    tok = load_tokenizer(args.ckpt)
    for wav in map(Path, args.wavs):
        out = Path(args.out_dir) / f"{wav.stem}.{args.format}"
        k, t = encode_file(tok, wav, out)
        print(f"{wav} -> {out} [{k} x {t}]")
    return 0


def _cmd_codec_decode(args: argparse.Namespace) -> int:
    from speechlm.tokenizers.files import decode_file
    from speechlm.tokenizers.registry import load_tokenizer

    tok = load_tokenizer(args.ckpt)
    for codes in map(Path, args.codes):
        out = Path(args.out_dir) / f"{codes.stem}.wav"
        print(f"{codes} -> {out} ({decode_file(tok, codes, out):.2f} s)")
    return 0


def _cmd_codec_ship(args: argparse.Namespace) -> int:
    from speechlm.tokenizers.checkpoint import ship_checkpoint

    eval_json = Path(args.eval) if args.eval else None
    out = ship_checkpoint(Path(args.ckpt), Path(args.out), eval_json, args.note, storage=args.storage)
    print(f"shipped {args.ckpt} -> {out}")
    return 0


def _cmd_codec_repack(args: argparse.Namespace) -> int:
    from speechlm.tokenizers.checkpoint import repack

    r = repack(Path(args.ckpt), args.storage)
    print(f"{args.ckpt}: {r.bytes_before / 1e6:.2f} MB -> {r.bytes_after / 1e6:.2f} MB ({args.storage})")
    if r.fingerprint_after != r.fingerprint_before:
        print(
            f"fingerprint {r.fingerprint_before[:12]} -> {r.fingerprint_after[:12]}: SLMs trained on the old weights "
            "(and their code caches) no longer match this tokenizer"
        )
    return 0


def _cmd_codec_probe(args: argparse.Namespace) -> int:
    from speechlm.data.manifest import Corpus
    from speechlm.runtime import set_threads
    from speechlm.tokenizers.probes import ProbeConfig, run_probes
    from speechlm.tokenizers.registry import load_tokenizer

    set_threads(args.threads)
    judge = None
    if not args.no_vc:
        from speechlm.eval.judges import SpeakerJudge

        judge = SpeakerJudge.default()
    cfg = ProbeConfig(vc_pairs=args.pairs, seed=args.seed)
    report = run_probes(load_tokenizer(args.ckpt), Corpus.open(args.data), cfg, judge)
    print(report.format())
    if args.json:
        report.write_json(Path(args.json))
    return 0


def add_codec(sub: argparse._SubParsersAction) -> None:
    codec = sub.add_parser("codec", help="train, evaluate and run in-house speech tokenizers")
    verbs = codec.add_subparsers(dest="codec_verb", required=True)

    p = verbs.add_parser("train", help="train a speech tokenizer from a configs/codec/*.yaml")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="a.b=c config overrides")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint")
    p.set_defaults(func=_cmd_codec_train)

    p = verbs.add_parser("eval", help="resynthesis STOI, PESQ, WER, SIM, MOS, RTF on a corpus split")
    p.add_argument("ckpt", help="a tokenizer folder (model.safetensors + config.yaml)")
    p.add_argument("--data", required=True, help="corpus folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", default=None, help="write the report as JSON")
    p.add_argument("--max-items", type=int, default=0, help="evaluate N utterances spread evenly over the split (0 = all)")
    p.add_argument("--no-judges", action="store_true", help="signal metrics only (no ASR/speaker/MOS)")
    p.add_argument("--audio-dir", default=None, help="also write the resynthesised wavs here")
    p.add_argument("--streams", default=None, help="decode only these streams, e.g. 0,1,2 (the SLM's streams of the decoupled codec)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.set_defaults(func=_cmd_codec_eval)

    p = verbs.add_parser("probe", help="decoupling probes: speaker identity per code stream + voice conversion")
    p.add_argument("ckpt", help="a tokenizer folder (model.safetensors + config.yaml)")
    p.add_argument("--data", required=True, help="corpus folder (train split fits the probes, test split scores)")
    p.add_argument("--json", default=None, help="write the report as JSON")
    p.add_argument("--pairs", type=int, default=40, help="voice-conversion pairs (decoupled designs)")
    p.add_argument("--no-vc", action="store_true", help="skip the voice-conversion test (no speaker judge)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.set_defaults(func=_cmd_codec_probe)

    p = verbs.add_parser("encode", help="audio files -> code files")
    p.add_argument("ckpt")
    p.add_argument("wavs", nargs="+")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--format", choices=["safetensors", "npy"], default="safetensors")
    p.set_defaults(func=_cmd_codec_encode)

    p = verbs.add_parser("decode", help="code files -> wav files")
    p.add_argument("ckpt")
    p.add_argument("codes", nargs="+")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=_cmd_codec_decode)

    p = verbs.add_parser("ship", help="copy a trained checkpoint (fp16) with a model card to a folder")
    p.add_argument("ckpt", help="RUN/checkpoint written by `codec train`")
    p.add_argument("--out", required=True, help="e.g. checkpoints/codec/coupled_rvq")
    p.add_argument("--eval", default=None, help="`codec eval --json` report to put on the model card")
    p.add_argument("--note", default="", help="a paragraph for the card (machine, budget, caveats)")
    p.add_argument("--storage", default="fp16", help=_STORAGE_HELP)
    p.set_defaults(func=_cmd_codec_ship)

    p = verbs.add_parser("repack", help="rewrite a saved tokenizer's weights in another storage, in place")
    p.add_argument("ckpt", help="a shipped or trained tokenizer folder")
    p.add_argument("--storage", required=True, help=_STORAGE_HELP)
    p.set_defaults(func=_cmd_codec_repack)
