"""`speechlm demo`: the main job on the built-in defaults.

Until a trained model ships with the toolkit (issue 7), the demo builds the tiny built-in corpus
and shows what is in it: speakers, splits, a few sentences and the spoken-QA pairs.
"""

from __future__ import annotations

from pathlib import Path


def run_demo(out: Path) -> int:
    from speechlm.data.check import check_corpus
    from speechlm.data.synth import synthesize_corpus

    corpus = out / "corpus"
    summary = synthesize_corpus("tiny", corpus, seed=0)
    print(summary.format())
    report = check_corpus(corpus)
    print(report.format())
    return 0 if report.ok else 1
