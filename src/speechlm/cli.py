"""`speechlm <verb>`: parse arguments, build configs, call the library. No logic lives here.

Library modules are imported inside each command so that `speechlm --help` stays fast and a
verb's heavy dependencies (transformers, onnxruntime, ...) load only when it runs.
Verbs per DESIGN.md §8.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from speechlm.data.synth import synthesize_corpus

    summary = synthesize_corpus(args.preset, Path(args.out), seed=args.seed, workers=args.workers)
    print(summary.format())
    return 0


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
    p.add_argument("--preset", choices=["tiny", "demo"], default="tiny")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechlm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    _add_data(sub)

    p = sub.add_parser("demo", help="the main job on the built-in defaults")
    p.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # User errors (bad config key, missing file, corrupt audio ...): one clear line, exit 2.
        print(f"speechlm: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
