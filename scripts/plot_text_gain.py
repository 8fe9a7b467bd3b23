"""Plot how reading emerges over training: text gain per quarter and ASR gain of `speechlm textgain` JSONs.

    .venv/bin/python scripts/plot_text_gain.py OUT.png STEPS:JSON [STEPS:JSON ...]
    e.g. scripts/plot_text_gain.py docs/large_run/text_gain.png 1000:docs/large_run/textgain_step_1000.json ...

A model that only knows how sentences begin has its text gain in the first quarter; reading shows as the later
quarters rising (docs/RESULTS.md, "More distinct sentences").
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(out: str, specs: list[str]) -> None:
    if not specs:
        raise SystemExit("usage: plot_text_gain.py OUT.png STEPS:JSON [STEPS:JSON ...]")
    points = sorted((int(step), json.loads(open(path).read())) for step, path in (s.split(":", 1) for s in specs))
    steps = [s for s, _ in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for q in range(4):
        left.plot(steps, [r["gain_by_quarter"][q] for _, r in points], marker="o", label=f"quarter {q + 1}")
    left.plot(steps, [r["gain"] for _, r in points], marker="s", color="black", label="all")
    left.set(xlabel="training step", ylabel="text gain (nats / speech token)", title="TTS: speech NLL, other - own text")
    left.legend()
    asr = [(s, r["asr"]["gain"]) for s, r in points if r.get("asr")]
    if asr:
        right.plot(*zip(*asr), marker="o", color="tab:red")
    right.set(xlabel="training step", ylabel="ASR gain (nats / text token)", title="ASR: transcript NLL, other - own speech")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.axhline(0.0, color="grey", lw=0.8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
