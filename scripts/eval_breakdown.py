"""Break a `speechlm eval` report down by kind, voice family and seen/unseen voice.

    .venv/bin/python scripts/eval_breakdown.py runs/slm/default_eval/report.json

The ASR judge is calibrated on the flite/festival voices (the espeak-ng voices read at ~70 % WER even as
ground truth, docs/RESULTS.md "Judges"), so the figure to hold against a WER target is the flite/festival row.
Voice families follow the built-in corpus's speaker names (``es_*`` = espeak-ng).
"""

from __future__ import annotations

import json
import sys

from speechlm.eval.metrics import word_errors


def main(path: str) -> None:
    items = json.loads(open(path).read())["items"]
    print("kind family         voices   n   WER    top-1 speaker")
    for kind in ("tts", "qa"):
        ok = [i for i in items if i["kind"] == kind and i["success"] and i["hypothesis"] is not None]
        for family, espeak in (("flite/festival", False), ("espeak-ng", True)):
            for seen in (True, False):
                rows = [i for i in ok if i["speaker"].startswith("es_") == espeak and i["seen"] is seen]
                if not rows:
                    continue
                wer = word_errors([i["text"] for i in rows], [i["hypothesis"] for i in rows]).rate
                ranked = [i["speaker_rank"] == 1 for i in rows if "speaker_rank" in i]
                top1 = f"{sum(ranked) / len(ranked):.2f}" if ranked else "-"
                print(f"{kind:4s} {family:14s} {'seen' if seen else 'unseen':6s} {len(rows):4d}  {wer:5.3f}  {top1}")


if __name__ == "__main__":
    main(sys.argv[1])
