"""`speechlm data synth`: the built-in multi-speaker English corpus and its spoken QA, made offline.

Two parts, mirroring the study's two training stages (§3.2):

- **TTS/ASR corpus** (stage 1): unique grammar sentences (:mod:`.grammar`) spoken by flite,
  festival and espeak-ng speakers (:mod:`.voices`). Seen speakers have train/val/test sentences,
  unseen ones only test sentences (seen/unseen SIM, §4.3). Every sentence is spoken once, so no
  test sentence is ever in train ("sentences not in training data").
- **Spoken QA** (stage 2, RoleTriviaQA-shaped, §3.1, App. G): questions from :mod:`.facts`, the
  text answer "The answer is X." spoken in a *role*'s voice. In-domain categories are split by
  fact; out-of-domain categories appear only in test. Unseen roles appear only in test.

Planning is pure and seeded (same seed -> byte-identical manifests); synthesis runs in a process
pool, one job per (speaker, chunk), since each item is a short subprocess call.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import yaml
from tqdm import tqdm

from speechlm.config import from_dict
from speechlm.data import ngram
from speechlm.data.facts import Fact, FactTable, answer_text, load_facts
from speechlm.data.grammar import Grammar, load_grammar, tokenize, write_dictionary
from speechlm.data.manifest import Utterance, write_manifest
from speechlm.data.voices import SAMPLE_RATE, RoleSpec, VoiceTable, check_engines, load_voice_table, synthesize

PRESETS = ("tiny", "demo", "large")
CHUNK = 16  # utterances per pool job: amortises process hand-off and festival start-up


@dataclass(frozen=True)
class SynthPreset:
    """Corpus size. TTS counts are per speaker; QA counts are totals."""

    tts_train: int  # sentences per seen speaker
    tts_val: int
    tts_test: int
    tts_unseen: int  # test sentences per unseen speaker
    qa_train: int
    qa_val: int
    qa_test_in: int  # held-out facts of in-domain categories
    qa_test_out: int  # held-out categories
    lm_extra_sentences: int  # grammar samples (never test sentences) added to the LM text
    lm_order: int = 3
    min_words: int = 3
    max_words: int = 12
    qa_val_fraction: float = 0.05  # of each in-domain category's facts
    qa_test_fraction: float = 0.2

    def __post_init__(self) -> None:
        counts = {k: v for k, v in vars(self).items() if isinstance(v, int)}
        bad = {k: v for k, v in counts.items() if v < 0}
        if bad:
            raise ValueError(f"preset counts must be >= 0: {bad}")
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}")
        if self.qa_val_fraction + self.qa_test_fraction >= 1.0:
            raise ValueError("qa_val_fraction + qa_test_fraction must leave facts for training")


def load_preset(name: str) -> SynthPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown corpus preset {name!r} (choose from {', '.join(PRESETS)})")
    text = resources.files("speechlm.data").joinpath(f"resources/presets/{name}.yaml").read_text()
    return from_dict(SynthPreset, yaml.safe_load(text), source=f"speechlm/data/resources/presets/{name}.yaml")


@dataclass(frozen=True)
class CorpusSummary:
    root: Path
    preset: str
    seed: int
    counts: dict[str, dict[str, int]]  # {"tts": {split: n}, "qa": {split/domain: n}}
    hours: float  # total audio
    seconds: float  # wall-clock build time
    speakers: int
    unseen_speakers: int
    failed: tuple[str, ...] = ()  # synthesis jobs that failed; their rows are left out

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        tts = ", ".join(f"{k} {v}" for k, v in self.counts["tts"].items())
        qa = ", ".join(f"{k} {v}" for k, v in self.counts["qa"].items())
        return (
            f"corpus '{self.preset}' (seed {self.seed}) in {self.root}: {self.speakers} speakers "
            f"({self.unseen_speakers} unseen), {self.hours * 60:.1f} min of audio, built in {self.seconds:.1f} s\n"
            f"  tts: {tts}\n  qa:  {qa}"
        ) + "".join(f"\n  FAILED (left out): {f}" for f in self.failed)


def sentence_case(words: list[str] | str) -> str:
    """["the", "red", "dog"] -> "The red dog." (manifest text; metrics normalise case and punctuation)."""
    text = words if isinstance(words, str) else " ".join(words)
    return text[:1].upper() + text[1:] + "."


# ---------------------------------------------------------------------------------------------
# Planning (pure, seeded)


def plan_tts(preset: SynthPreset, voices: VoiceTable, grammar: Grammar, rng: random.Random) -> list[Utterance]:
    """One unique sentence per utterance; seen speakers get train/val/test, unseen only test."""
    quota: list[tuple[str, str, int]] = []
    for spk in voices.speakers:
        splits = (("train", preset.tts_train), ("val", preset.tts_val), ("test", preset.tts_test))
        quota += [(spk.name, s, n) for s, n in splits] if spk.seen else [(spk.name, "test", preset.tts_unseen)]
    total = sum(n for *_, n in quota)
    sentences = iter(grammar.sample_unique(rng, total, min_words=preset.min_words, max_words=preset.max_words))
    rows = []
    for speaker, split, n in quota:
        for i in range(n):
            uid = f"tts-{speaker}-{split}-{i:04d}"
            text = sentence_case(next(sentences))
            rows.append(Utterance(uid, f"audio/tts/{speaker}/{uid}.wav", text, speaker, 0.0, split))
    return rows


def split_facts(facts: FactTable, preset: SynthPreset, rng: random.Random) -> dict[str, list[Fact]]:
    """In-domain facts split per category into train/val/test; out-of-domain facts are all "test_out"."""
    pools: dict[str, list[Fact]] = {"train": [], "val": [], "test_in": [], "test_out": facts.facts("out")}
    by_category: dict[str, list[Fact]] = defaultdict(list)
    for fact in facts.facts("in"):
        by_category[fact.category].append(fact)
    for items in by_category.values():
        items = items[:]
        rng.shuffle(items)
        n_test = max(1, round(preset.qa_test_fraction * len(items)))
        n_val = max(1, round(preset.qa_val_fraction * len(items)))
        pools["test_in"] += items[:n_test]
        pools["val"] += items[n_test : n_test + n_val]
        pools["train"] += items[n_test + n_val :]
    return pools


def _round_robin(
    pairs: list[tuple[Fact, RoleSpec]], n: int, rng: random.Random, what: str
) -> Iterator[tuple[Fact, RoleSpec]]:
    """``n`` distinct (fact, role) pairs, cycling over categories so small categories are not drowned."""
    if n > len(pairs):
        raise ValueError(f"{what}: asked for {n} QA pairs but only {len(pairs)} distinct (fact, role) pairs exist")
    queues: dict[str, list[tuple[Fact, RoleSpec]]] = defaultdict(list)
    for pair in pairs:
        queues[pair[0].category].append(pair)
    for queue in queues.values():
        rng.shuffle(queue)
    order = sorted(queues)
    taken = 0
    while taken < n:
        for cat in order:
            if queues[cat] and taken < n:
                yield queues[cat].pop()
                taken += 1


def plan_qa(preset: SynthPreset, voices: VoiceTable, facts: FactTable, rng: random.Random) -> list[Utterance]:
    """Spoken-QA rows: train/val with seen roles; test with all roles, in- and out-of-domain."""
    pools = split_facts(facts, preset, rng)
    seen = [r for r in voices.roles if r.seen]
    wanted = {
        "train": preset.qa_train, "val": preset.qa_val, "test_in": preset.qa_test_in, "test_out": preset.qa_test_out,
    }
    rows = []
    for part, n in wanted.items():
        roles = seen if part in ("train", "val") else list(voices.roles)
        pairs = [(f, r) for f in pools[part] for r in roles]
        split = "test" if part.startswith("test") else part
        for i, (fact, role) in enumerate(_round_robin(pairs, n, rng, part)):
            item = facts.ask(fact, rng)
            uid = f"qa-{part.replace('_', '-')}-{i:04d}"
            rows.append(
                Utterance(
                    uid, f"audio/qa/{uid}.wav", answer_text(item.answer), role.speaker, 0.0, split,
                    question=item.question, answer=item.answer, role=role.name,
                    category=item.category, domain=item.domain,
                )
            )
    return rows


# ---------------------------------------------------------------------------------------------
# Synthesis (process pool)


def _jobs(rows: list[Utterance], voices: VoiceTable, root: Path) -> list[tuple[str, list[tuple[str, str]], list[str]]]:
    """(speaker, [(text, wav path)], [ids]) chunks; the text spoken is the manifest text."""
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for row in rows:
        by_speaker[row.speaker].append(row)
    jobs = []
    for speaker, items in by_speaker.items():
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            jobs.append((speaker, [(r.text, str(root / r.audio)) for r in chunk], [r.id for r in chunk]))
    return jobs


def _run_jobs(
    jobs: list[tuple[str, list[tuple[str, str]], list[str]]], voices: VoiceTable, workers: int
) -> Iterator[tuple[list[str], list[int] | Exception]]:
    """Yield (ids, sample counts or the error) per job, as jobs finish."""
    if workers <= 1:
        for speaker, items, ids in jobs:
            try:
                yield ids, synthesize(voices.speaker(speaker), items)
            except _JOB_ERRORS as err:
                yield ids, err
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(synthesize, voices.speaker(s), items): ids for s, items, ids in jobs}
        for future in as_completed(futures):
            err = future.exception()
            if err is not None and not isinstance(err, _JOB_ERRORS):
                raise err  # a bug, not a bad item
            yield futures[future], err if err is not None else future.result()


_JOB_ERRORS = (RuntimeError, ValueError, OSError)  # engine failure, unusable audio, disk


def synthesize_rows(
    rows: list[Utterance], voices: VoiceTable, root: Path, workers: int
) -> tuple[list[Utterance], list[str]]:
    """Speak every row into ``root/row.audio``; return (rows with measured durations, failures).

    A failed job leaves its rows out and is reported (DESIGN.md §7: skip and report, never fatal).
    """
    check_engines(voices.speakers)
    lengths: dict[str, int] = {}
    failed: list[str] = []
    with tqdm(total=len(rows), desc="synthesising", unit="utt") as bar:
        for ids, outcome in _run_jobs(_jobs(rows, voices, root), voices, workers):
            if isinstance(outcome, Exception):
                failed.append(f"{ids[0]} .. {ids[-1]} ({len(ids)} utterances): {outcome}")
            else:
                lengths.update(zip(ids, outcome))
            bar.update(len(ids))
    done = [replace(r, duration=round(lengths[r.id] / SAMPLE_RATE, 4)) for r in rows if r.id in lengths]
    return done, sorted(failed)


# ---------------------------------------------------------------------------------------------
# Exports: grammar/LM for the ASR judge, corpus.json, README.md


def export_grammar(
    root: Path, grammar: Grammar, facts: FactTable, tts: list[Utterance], qa: list[Utterance],
    preset: SynthPreset, rng: random.Random,
) -> int:
    """Write grammar/{words.txt, domain.dic, domain.jsgf, lm_text.txt, domain.lm}; return vocab size.

    The vocabulary is closed: every word any corpus utterance may say (all grammar words and all
    answers, test ones included). The LM text holds only train/val text plus fresh grammar
    samples that are not test sentences, so the judge's LM has never seen a test sentence.
    """
    out = root / "grammar"
    out.mkdir(parents=True, exist_ok=True)
    answers = sorted({" ".join(tokenize(answer_text(f.answer))) for f in facts.facts()})
    words = sorted(set(grammar.words()) | {w for a in answers for w in a.split()})
    (out / "words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    write_dictionary(words, out / "domain.dic")
    (out / "domain.jsgf").write_text(grammar.to_jsgf({"answer": answers}), encoding="utf-8")

    test_text = {" ".join(tokenize(r.text)) for r in (*tts, *qa) if r.split == "test"}
    fit = [" ".join(tokenize(r.text)) for r in (*tts, *qa) if r.split != "test"]
    fit = [s for s in fit if s not in test_text]  # a QA answer may repeat in test; keep test text out
    extra = grammar.sample_unique(
        rng, preset.lm_extra_sentences, min_words=preset.min_words, max_words=preset.max_words,
        exclude=test_text | set(fit),
    )
    lm_text = fit + extra
    (out / "lm_text.txt").write_text("\n".join(lm_text) + "\n", encoding="utf-8")
    ngram.build_arpa((s.split() for s in lm_text), out / "domain.lm", order=preset.lm_order, vocab=words)
    return len(words)


def _counts(tts: list[Utterance], qa: list[Utterance]) -> dict[str, dict[str, int]]:
    qa_parts = Counter(r.split if r.split != "test" else f"test_{r.domain}" for r in qa)
    return {
        "tts": {s: sum(r.split == s for r in tts) for s in ("train", "val", "test")},
        "qa": {k: qa_parts[k] for k in ("train", "val", "test_in", "test_out")},
    }


def corpus_info(
    preset: str, seed: int, voices: VoiceTable, facts: FactTable, tts: list[Utterance], qa: list[Utterance], vocab: int
) -> dict:
    """corpus.json: everything about the corpus except timings (so it is reproducible byte for byte)."""
    return {
        "name": "speechlm-builtin",
        "version": 1,
        "preset": preset,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "speakers": [
            {"name": s.name, "engine": s.engine, "voice": s.voice_id, "seen": s.seen, "gender": s.gender}
            for s in voices.speakers
        ],
        "roles": [{"name": r.name, "speaker": r.speaker, "seen": r.seen} for r in voices.roles],
        "categories": {name: c.domain for name, c in facts.categories.items()},
        "counts": _counts(tts, qa),
        "hours": round(sum(r.duration for r in (*tts, *qa)) / 3600, 4),
        "vocabulary": vocab,
    }


def write_readme(root: Path, info: dict) -> None:
    def split(seen: bool) -> str:
        return "seen" if seen else "unseen (test only)"

    speakers = "\n".join(
        f"| {s['name']} | {s['engine']} | {s['voice']} | {s['gender']} | {split(s['seen'])} |" for s in info["speakers"]
    )
    roles = "\n".join(f"| {r['name']} | {r['speaker']} | {split(r['seen'])} |" for r in info["roles"])
    cats = ", ".join(f"{k} ({v})" for k, v in info["categories"].items())
    tts, qa = info["counts"]["tts"], info["counts"]["qa"]
    text = f"""# speechlm built-in corpus (preset `{info['preset']}`, seed {info['seed']})

Made offline by `speechlm data synth --preset {info['preset']} --out DIR --seed {info['seed']}`:
English speech from flite, festival and espeak-ng, {info['sample_rate']} Hz mono PCM16,
{info['hours'] * 60:.1f} minutes in all. Check it with `speechlm data check DIR`.

## Files
- `tts.jsonl` — TTS/ASR rows `{{id, audio, text, speaker, duration, split}}`:
  train {tts['train']}, val {tts['val']}, test {tts['test']}.
  Sentences come from a closed-vocabulary grammar ({info['vocabulary']} words, 3-12 words each);
  every sentence is spoken once, so test sentences never occur in train.
- `qa.jsonl` — spoken QA shaped like RoleTriviaQA (arXiv 2506.12537 §3.1, App. G): the same fields plus
  `{{question, answer, role, category, domain}}`; `text` is the answer "The answer is X." and the audio
  speaks it in the role's voice. train {qa['train']}, val {qa['val']}, test in-domain {qa['test_in']}
  (held-out facts), test out-of-domain {qa['test_out']} (held-out categories).
- `grammar/` — for the ASR judge: `words.txt`, `domain.dic` (CMU pronunciations), `domain.jsgf`,
  `lm_text.txt` (train/val text + grammar samples, never test sentences), `domain.lm` (3-gram ARPA).
- `audio/` — the wav files; `audio` fields are relative to this folder.

## Speakers
Seen speakers appear in train/val/test; unseen speakers only in test (seen/unseen SIM, study §4.3).

| name | engine | voice | gender | split |
|---|---|---|---|---|
{speakers}

## Roles (spoken QA)
| role | voice | split |
|---|---|---|
{roles}

Fact categories (domain): {cats}.
"""
    (root / "README.md").write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------


def _prepare_out(out: Path) -> None:
    """Create ``out``; rebuild a previous corpus in place, but never clobber an unrelated folder."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} is a file, not a folder")
    if out.exists() and any(out.iterdir()):
        if not (out / "corpus.json").is_file():
            raise ValueError(f"output folder {out} is not empty and holds no corpus.json; choose another --out")
        for sub in ("audio", "grammar"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def synthesize_corpus(preset: str, out: Path, seed: int = 0, workers: int | None = None) -> CorpusSummary:
    """Build the built-in corpus into ``out``; see the module docstring."""
    start = time.perf_counter()
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    cfg = load_preset(preset)
    voices, grammar, facts = load_voice_table(), load_grammar(), load_facts()
    out = Path(out)
    _prepare_out(out)
    # Separate streams per part, so e.g. a change in QA size does not reshuffle the TTS sentences.
    tts = plan_tts(cfg, voices, grammar, random.Random(f"{seed}/tts"))
    qa = plan_qa(cfg, voices, facts, random.Random(f"{seed}/qa"))
    workers = workers if workers is not None else (os.cpu_count() or 1)
    rows, failed = synthesize_rows(tts + qa, voices, out, workers)
    tts, qa = [r for r in rows if not r.is_qa], [r for r in rows if r.is_qa]
    write_manifest(out / "tts.jsonl", tts)
    write_manifest(out / "qa.jsonl", qa)
    vocab = export_grammar(out, grammar, facts, tts, qa, cfg, random.Random(f"{seed}/lm"))
    info = corpus_info(preset, seed, voices, facts, tts, qa, vocab)
    (out / "corpus.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    write_readme(out, info)
    return CorpusSummary(
        root=out, preset=preset, seed=seed, counts=info["counts"], hours=info["hours"],
        seconds=time.perf_counter() - start, speakers=len(voices.speakers),
        unseen_speakers=sum(not s.seen for s in voices.speakers), failed=tuple(failed),
    )
