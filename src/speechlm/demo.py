"""`speechlm demo` (`make demo`): the main job on the built-in defaults, in a few minutes on a laptop CPU.

1. Build two tiny built-in corpora: seed 0 for the voices (reference recordings, SIM targets) and the
   spoken-QA questions (the same held-out facts as every seed-0 corpus), seed ``SENTENCE_SEED`` for the
   sentences to read (its grammar feeds the ASR judge's domain LM, which never holds its test sentences).
2. Take the shipped default model (``checkpoints/slm/default``: decoupled tokenizer, speaker-aware
   MTP, study §2.2-2.3) -- or, until one ships, train a tiny model for a few dozen steps on the tiny
   corpus so that every stage runs, and say loudly that it is an untrained pipeline check.
3. Read test sentences aloud in seen and unseen voices, answer spoken-QA questions in role voices.
4. Judge everything offline (ASR transcript + WER, speaker SIM, DNSMOS, RTF) with the same
   generation and scoring code as ``speechlm eval`` (:mod:`speechlm.eval.evaluate`), and write
   ``demo/``: the wavs, ``README.md`` (the tables), ``results.json`` and ``spectrograms.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechlm.assets import REPO_ROOT as ROOT
from speechlm.assets import default_slm
from speechlm.data.manifest import Corpus, Utterance

FALLBACK_CONFIG = Path("configs/slm/tiny_mtp12_spk.yaml")
UNTRAINED_NOTE = (
    "UNTRAINED PIPELINE CHECK: no shipped model was found at checkpoints/slm/default, so a tiny model was trained "
    "for {steps} steps on the tiny corpus with a random-init codec. Its speech is noise; the figures below only show "
    "that every stage runs. This is not the shipped model."
)


@dataclass(frozen=True)
class DemoPlan:
    """How many items of each kind the demo speaks (seen/unseen voices, QA questions)."""

    seen_voices: int = 2
    unseen_voices: int = 2
    questions: int = 3
    fallback_steps: int = 40


SENTENCE_SEED = 1
"""Seed of the corpus whose test sentences the demo reads. Corpora draw their sentences in order from one
stream per seed, so every sentence of the seed-0 tiny corpus is a training sentence of the seed-0 ``demo``
and ``large`` corpora the shipped models learn from; seed 1's test sentences are in neither
(tests/test_demo.py checks), so the demo's WER is measured on text the model has not seen."""


def prepare_corpus(out: Path, seed: int = 0) -> Path:
    """The tiny built-in corpus of ``seed`` in ``out`` (synthesised once; a few seconds)."""
    from speechlm.data.synth import synthesize_corpus

    if not (out / "corpus.json").is_file():
        print(synthesize_corpus("tiny", out, seed=seed).format())
    return out


def train_fallback(out: Path, corpus: Path, steps: int) -> Path:
    """A tiny speaker-aware MTP-12 model, trained on the tiny corpus for ``steps`` steps."""
    from speechlm.train.config import load_train_config
    from speechlm.train.loop import train

    config = FALLBACK_CONFIG if FALLBACK_CONFIG.is_file() else ROOT / FALLBACK_CONFIG
    codec = ROOT / "configs/codec/tiny_decoupled.yaml"
    overrides = [f"data.corpus={corpus}", f"data.cache_dir={out / 'cache'}", f"train.out_dir={out / 'model'}",
                 f"train.max_steps={steps}", f"tokenizer.config={codec}", "train.tensorboard=false"]  # fmt: skip
    return train(load_train_config(config, overrides)).checkpoint


def pick_sentences(corpus: Corpus, plan: DemoPlan) -> list[Utterance]:
    """One test sentence per voice, seen voices first, then unseen."""
    firsts: dict[str, Utterance] = {}
    for row in corpus.tts("test"):
        firsts.setdefault(row.speaker, row)
    seen = [r for name, r in firsts.items() if corpus.speakers[name].seen][: plan.seen_voices]
    unseen = [r for name, r in firsts.items() if not corpus.speakers[name].seen][: plan.unseen_voices]
    return seen + unseen


def pick_questions(corpus: Corpus, plan: DemoPlan) -> list[Utterance]:
    """The first test questions of each domain, in-domain first."""
    qa_in, qa_out = corpus.qa("test", domain="in"), corpus.qa("test", domain="out")
    return (qa_in[: (plan.questions + 1) // 2] + qa_out[: plan.questions // 2])[: plan.questions]


def run_demo(out: Path, plan: DemoPlan = DemoPlan()) -> int:
    from speechlm.eval.evaluate import generate_split, score_items
    from speechlm.eval.judges import JudgesConfig, build_judges
    from speechlm.inference.api import Synthesizer
    from speechlm.inference.generate import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    corpus_dir = prepare_corpus(out / "corpus", seed=0)
    sentences_dir = prepare_corpus(out / "sentences", seed=SENTENCE_SEED)
    model = default_slm()
    note = ""
    generation = GenerationConfig()
    if model is None:
        note = UNTRAINED_NOTE.format(steps=plan.fallback_steps)
        print(f"\n*** {note} ***\n")
        model = train_fallback(out, corpus_dir, plan.fallback_steps)
        # An untrained model rarely emits END or "[ua]": tight limits keep the check quick.
        generation = GenerationConfig(seconds_per_char=0.06, extra_seconds=0.5, max_text_tokens=16)
    synth = Synthesizer.load(model, generation=generation)
    corpus, sentences = Corpus.open(corpus_dir), Corpus.open(sentences_dir)
    items = generate_split(synth, sentences, {"tts": pick_sentences(sentences, plan)}, out)
    items += generate_split(synth, corpus, {"qa": pick_questions(corpus, plan)}, out)
    report = score_items(items, out, build_judges(JudgesConfig(), sentences_dir))
    write_outputs(out, model, note, items, report)
    print((out / "README.md").read_text())
    return 0


def write_outputs(out: Path, model: Path, note: str, items: list, report: dict[str, Any]) -> None:
    """``results.json``, ``README.md`` (tables) and ``spectrograms.png`` in ``out``."""
    timing = {i.id: (i.seconds, i.audio_seconds) for i in items}
    for row in report["items"]:
        seconds, audio = timing[row["id"]]
        row["rtf"] = seconds / audio if audio > 0 else None
    payload = {"model": str(model), "untrained_pipeline_check": bool(note), **report}
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    (out / "README.md").write_text(render_readme(model, note, report))
    plot_spectrograms(report["items"], out / "spectrograms.png")


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def model_status(model: Path) -> str:
    """The ``**Status: ...`` paragraph of a shipped model's card (``speechlm ship --note``), if any."""
    card = model / "README.md"
    if not card.is_file():
        return ""
    return next((line for line in card.read_text().splitlines() if line.startswith("**Status")), "")


def render_readme(model: Path, note: str, report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = ["# speechlm demo", "", f"Model: `{model}`.", ""]
    if note:
        lines += [f"> **{note}**", ""]
    elif model_status(model):
        lines += [f"> {model_status(model)}", ""]
    lines += ["## Text to speech (seen and unseen voices)", "",
              "| text | voice | seen | judge transcript | WER | SIM | MOS | RTF | ok |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for it in report["items"]:
        if it["kind"] == "tts":
            lines.append(f"| {it['text']} | {it['speaker']} | {_f(it['seen'])} | {_f(it['hypothesis'])} | {_f(it['wer'])} | "
                         f"{_f(it['sim'])} | {_f(it['mos'])} | {_f(it['rtf'])} | {_ok(it)} |")  # fmt: skip
    lines += ["", "## Spoken QA (answer text, then its speech in the role's voice)", "",
              "| question | role voice | answer (text) | EM | judge transcript | SIM | MOS | ok |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for it in report["items"]:
        if it["kind"] == "qa":
            lines.append(f"| {it['question']} | {it['speaker']} | {_f(it['predicted'])} | {_f(it.get('em'), 0)} | "
                         f"{_f(it['hypothesis'])} | {_f(it['sim'])} | {_f(it['mos'])} | {_ok(it)} |")  # fmt: skip
    judges = ", ".join(f"{k}={s[k]}" for k in ("asr_judge", "sim_judge", "mos_judge") if s.get(k))
    lines += ["", f"Summary: success rate {_f(s['success_rate'])}, WER {_f(s['wer'])}, SIM seen {_f(s['sim_seen'])}, "
              f"SIM unseen {_f(s['sim_unseen'])}, MOS {_f(s['mos'])}, RTF {_f(s['rtf'])}. Judges: {judges}.",
              "WER/SIM/MOS are measured on successful items only; a failed item gives its reason.",
              "", "![reference vs generated](spectrograms.png)", ""]  # fmt: skip
    return "\n".join(lines)


def _ok(item: dict[str, Any]) -> str:
    return "yes" if item["success"] else f"no ({item['failure']})"


def plot_spectrograms(items: list[dict[str, Any]], path: Path) -> Path:
    """Ground-truth recording vs generated speech, one row per TTS item."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from speechlm.audio import load_audio

    tts = [it for it in items if it["kind"] == "tts"]
    fig, axes = plt.subplots(len(tts), 2, figsize=(10, 2.2 * len(tts)), squeeze=False)
    for row, it in zip(axes, tts):
        for ax, (title, wav_path) in zip(row, (("reference", it["reference_audio"]), ("generated", it["audio"]))):
            ax.set_title(f"{it['speaker']}: {title}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if wav_path is None:
                ax.text(0.5, 0.5, "no audio", ha="center", va="center")
                continue
            audio = load_audio(wav_path, sample_rate=16_000)
            ax.specgram(audio.wav, NFFT=512, Fs=16_000, noverlap=384, cmap="magma")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
