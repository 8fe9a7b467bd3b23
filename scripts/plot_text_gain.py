"""Plot how reading emerges over training: text gain per quarter and ASR gain of `speechlm textgain` JSONs.

    .venv/bin/python scripts/plot_text_gain.py OUT.png [LABEL@]STEPS:JSON [[LABEL@]STEPS:JSON ...]
    e.g. scripts/plot_text_gain.py docs/large_run/text_gain.png 1000:docs/large_run/textgain_step_1000.json ...
    runs side by side: scripts/plot_text_gain.py cmp.png unguided@1000:a.json guided@1000:b.json ...

A model that only knows how sentences begin has its text gain in the first quarter; reading shows as the later
quarters rising (docs/RESULTS.md, "More distinct sentences"). With one run, each quarter gets a curve; with
labelled runs, each run gets its overall gain (solid) and the mean of its later three quarters (dashed).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _parse(specs: list[str]) -> dict[str, list[tuple[int, dict]]]:
    runs: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for spec in specs:
        label, _, rest = spec.rpartition("@")
        step, path = rest.split(":", 1)
        runs[label].append((int(step), json.loads(open(path).read())))
    return {label: sorted(points, key=lambda p: p[0]) for label, points in runs.items()}


def main(out: str, specs: list[str]) -> None:
    if not specs:
        raise SystemExit("usage: plot_text_gain.py OUT.png [LABEL@]STEPS:JSON [[LABEL@]STEPS:JSON ...]")
    runs = _parse(specs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for n, (label, points) in enumerate(runs.items()):
        steps = [s for s, _ in points]
        if len(runs) == 1:
            for q in range(4):
                left.plot(steps, [r["gain_by_quarter"][q] for _, r in points], marker="o", label=f"quarter {q + 1}")
            left.plot(steps, [r["gain"] for _, r in points], marker="s", color="black", label="all")
        else:
            color = f"C{n}"
            left.plot(steps, [r["gain"] for _, r in points], marker="s", color=color, label=f"{label}: all")
            later = [sum(r["gain_by_quarter"][1:]) / 3 for _, r in points]
            left.plot(steps, later, marker="o", ls="--", color=color, label=f"{label}: quarters 2-4")
        asr = [(s, r["asr"]["gain"]) for s, r in points if r.get("asr")]
        if asr:
            right.plot(*zip(*asr), marker="o", color="tab:red" if len(runs) == 1 else f"C{n}", label=label or None)
    left.set(xlabel="training step", ylabel="text gain (nats / speech token)", title="TTS: speech NLL, other - own text")
    left.legend(fontsize=8)
    right.set(xlabel="training step", ylabel="ASR gain (nats / text token)", title="ASR: transcript NLL, other - own speech")
    if len(runs) > 1:
        right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.axhline(0.0, color="grey", lw=0.8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
