"""Decoupling is measured, not assumed: speaker-identity probes on code streams and a voice-conversion test.

The study's argument (§2.1, §4.1) is that decoupled tokenizers help an LLM because their semantic
streams are free of speaker identity, which a global timbre vector carries instead. Two checks:

1. **Speaker probe** — for each view of the codes (the streams of one kind, the first stream, all
   streams, and the timbre vector when there is one) a logistic-regression classifier is trained on
   utterance-level features of the corpus' train split and scored on the test split (seen speakers
   only; chance = 1 / #speakers). A code view is summarised as its normalised code histogram, the
   bag of tokens an LM sees — for content codes, accuracy near chance means identity does not leak.
2. **Voice conversion** (FACodec §4.4, SpeechTokenizer §4.3) — the prosody + content codes of an
   utterance by speaker A decoded with the timbre vector of an utterance by speaker B; the speaker
   judge (resemblyzer by default) decides whether the result is closer to B's voice than to A's,
   each voice represented by the mean embedding of other test utterances of that speaker.
3. **Twin probe** — a 9-way probe mixes two things: who is speaking, and how the words are said
   (each engine and voice has its own lexicon, letter-to-sound rules and timing), which content
   codes may legitimately carry. Twins separate them: two seen speakers made by the same engine
   and base voice, one with the F0 and every frequency scaled (``slt`` / ``slt_high`` =
   ``slt f0=215 warp=1.1``), say the same words with the same timing, so only timbre and pitch
   tell them apart. A binary probe per twin pair (chance 0.5) on a content view therefore measures
   timbre leakage alone.

``speechlm codec probe CKPT --data DIR --json OUT`` runs both on a saved tokenizer.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from speechlm.audio import load_audio, resample
from speechlm.data.manifest import Corpus, Utterance
from speechlm.tokenizers.base import SpeechTokenizer, pad_batch


class SpeakerEmbedder(Protocol):
    """What the voice-conversion test needs from a speaker judge (``speechlm.eval.judges.SpeakerJudge``)."""

    sample_rate: int

    def embed(self, wav: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ProbeConfig:
    train_per_speaker: int = 60  # train-split utterances per seen speaker for the classifiers
    test_per_speaker: int = 20  # test-split utterances per seen speaker
    vc_pairs: int = 40  # (source, target) pairs of different speakers
    reference_utterances: int = 3  # other utterances averaged into a speaker's reference embedding
    batch_size: int = 8
    seed: int = 0


@dataclass(frozen=True)
class EncodedUtterance:
    utt: Utterance
    codes: np.ndarray  # [K,T] int64
    speaker_vector: np.ndarray | None  # [Ds]


@dataclass
class VoiceConversionResult:
    pairs: int
    success_rate: float  # fraction of conversions closer to the target speaker than to the source
    sim_to_target: float  # mean cosine(converted, target reference)
    sim_to_source: float  # mean cosine(converted, source reference)
    control_sim_to_source: float  # same codes decoded with the source's own timbre vector
    control_sim_to_target: float
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ProbeReport:
    tokenizer: str
    coupling: str
    speakers: int  # classes of the speaker probe
    chance: float
    n_train: int
    n_test: int
    accuracy: dict[str, float]  # view name -> test accuracy of the utterance-level speaker probe
    frame_accuracy: dict[str, float]  # view name -> test accuracy from a single frame's codes
    views: dict[str, list[int]]  # view name -> stream indices ("timbre" -> [])
    voice_conversion: VoiceConversionResult | None = None
    twins: list[list[str]] = field(default_factory=list)  # [speaker, twin] pairs of the twin probe
    twin_accuracy: dict[str, float] = field(default_factory=dict)  # view -> mean binary accuracy (chance 0.5)
    twin_frame_accuracy: dict[str, float] = field(default_factory=dict)  # the same from a single frame

    def format(self) -> str:
        lines = [f"speaker probe ({self.speakers} speakers, chance {self.chance:.3f}; {self.n_train} train / {self.n_test} test)"]
        lines.append(f"  {'view':<14} {'utterance':>9} {'frame':>7}")
        for name, acc in self.accuracy.items():
            frame = self.frame_accuracy.get(name)
            lines.append(f"  {name:<14} {acc:9.3f} {'-' if frame is None else f'{frame:.3f}':>7}   streams {self.views[name]}")
        if self.twins:
            pairs = ", ".join("/".join(p) for p in self.twins)
            lines.append(f"twin probe ({pairs}; chance 0.500)")
            for name, acc in self.twin_accuracy.items():
                frame = self.twin_frame_accuracy.get(name)
                lines.append(f"  {name:<14} {acc:9.3f} {'-' if frame is None else f'{frame:.3f}':>7}")
        vc = self.voice_conversion
        if vc is not None:
            lines.append(
                f"voice conversion ({vc.pairs} pairs): closer to target {vc.success_rate:.3f}; "
                f"sim target {vc.sim_to_target:.3f} / source {vc.sim_to_source:.3f} "
                f"(control: source {vc.control_sim_to_source:.3f} / target {vc.control_sim_to_target:.3f})"
            )
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))


def probe_views(tok: SpeechTokenizer) -> dict[str, tuple[int, ...]]:
    """Named stream subsets: one per stream kind, the first stream, and all streams."""
    by_kind: dict[str, list[int]] = defaultdict(list)
    for k, spec in enumerate(tok.streams):
        by_kind[spec.kind].append(k)
    views = {kind: tuple(idx) for kind, idx in by_kind.items()}
    views.setdefault("stream0", (0,))
    views["all_codes"] = tuple(range(tok.num_streams))
    return views


def code_histogram(codes: np.ndarray, streams: tuple[int, ...], sizes: tuple[int, ...]) -> np.ndarray:
    """``codes [K,T]`` -> concatenated per-stream code frequencies (each sums to 1)."""
    parts = [np.bincount(codes[k], minlength=sizes[k]).astype(np.float64) / max(1, codes.shape[1]) for k in streams]
    return np.concatenate(parts)


@torch.no_grad()
def encode_utterances(tok: SpeechTokenizer, corpus: Corpus, rows: list[Utterance], batch_size: int) -> list[EncodedUtterance]:
    """Encode ``rows`` in batches; codes are cut to each item's valid frames."""
    out: list[EncodedUtterance] = []
    for i in tqdm(range(0, len(rows), batch_size), desc="encode", leave=False):
        chunk = rows[i : i + batch_size]
        wav, lengths = pad_batch([load_audio(corpus.audio_path(u), sample_rate=tok.sample_rate).wav for u in chunk])
        enc = tok.encode(wav, lengths)
        for b, utt in enumerate(chunk):
            vec = enc.speaker[b].cpu().numpy() if enc.speaker is not None else None
            out.append(EncodedUtterance(utt, enc.codes[b, :, : int(enc.lengths[b])].cpu().numpy(), vec))
    return out


def speaker_probe_accuracy(x_train: np.ndarray, y_train: list[str], x_test: np.ndarray, y_test: list[str]) -> float:
    """Standardised multinomial logistic regression, trained on train and scored on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(x_train, y_train)
    return float(clf.score(x_test, y_test))


def frame_probe_accuracy(
    train: list[EncodedUtterance], test: list[EncodedUtterance], streams: tuple[int, ...], sizes: tuple[int, ...]
) -> float:
    """Speaker accuracy from one frame's codes (one-hot per stream, multinomial naive Bayes).

    Utterance histograms saturate when voices differ a lot (every view scores ~1.0 on the demo
    corpus); a single frame's tokens grade how much identity each token carries.
    """
    from scipy.sparse import csr_matrix
    from sklearn.naive_bayes import MultinomialNB

    offsets = np.cumsum((0,) + tuple(sizes[k] for k in streams))[:-1]

    def design(split: list[EncodedUtterance]) -> tuple[csr_matrix, list[str]]:
        cols = np.concatenate([e.codes[list(streams)].T + offsets for e in split])  # [frames, len(streams)]
        rows = np.repeat(np.arange(len(cols)), len(streams))
        x = csr_matrix((np.ones(rows.size), (rows, cols.ravel())), shape=(len(cols), int(offsets[-1] + sizes[streams[-1]])))
        return x, [e.utt.speaker for e in split for _ in range(e.codes.shape[1])]

    (x_train, y_train), (x_test, y_test) = design(train), design(test)
    return float(MultinomialNB(alpha=0.1).fit(x_train, y_train).score(x_test, y_test))


def twin_pairs(corpus: Corpus, speakers: set[str]) -> list[tuple[str, str]]:
    """Pairs of ``speakers`` synthesised by the same engine from the same base voice (sorted, each once).

    A voice id is the engine's voice plus variant settings (``"slt f0=215.0 warp=1.1"``); twins share
    the first word. The plain voice is paired with each of its variants.
    """
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name in sorted(speakers):
        info = corpus.speakers[name]
        groups[(info.engine, info.voice.split()[0])].append(name)
    pairs = []
    for names in groups.values():
        plain = [n for n in names if len(corpus.speakers[n].voice.split()) == 1]
        pairs += [(p, v) for p in plain for v in names if v != p]
    return sorted(pairs)


def twin_probe(
    train: list[EncodedUtterance],
    test: list[EncodedUtterance],
    pair: tuple[str, str],
    view: tuple[int, ...],
    sizes: tuple[int, ...],
) -> tuple[float, float]:
    """(utterance, frame) accuracy of telling the two speakers of ``pair`` apart from the codes of ``view``."""
    tr = [e for e in train if e.utt.speaker in pair]
    te = [e for e in test if e.utt.speaker in pair]
    x_tr, x_te = (np.stack([code_histogram(e.codes, view, sizes) for e in split]) for split in (tr, te))
    utterance = speaker_probe_accuracy(x_tr, [e.utt.speaker for e in tr], x_te, [e.utt.speaker for e in te])
    return utterance, frame_probe_accuracy(tr, te, view, sizes)


def _sample(rows: list[Utterance], per_speaker: int, rng: random.Random) -> list[Utterance]:
    groups: dict[str, list[Utterance]] = defaultdict(list)
    for r in rows:
        groups[r.speaker].append(r)
    picked = []
    for speaker in sorted(groups):
        items = groups[speaker][:]
        rng.shuffle(items)
        picked += items[:per_speaker]
    return picked


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def run_probes(
    tok: SpeechTokenizer, corpus: Corpus, cfg: ProbeConfig, judge: SpeakerEmbedder | None = None
) -> ProbeReport:
    """Speaker probes on every view of ``tok``'s codes; voice conversion too when ``judge`` is given."""
    rng = random.Random(cfg.seed)
    seen = set(corpus.seen_speakers())
    train_rows = _sample([r for r in corpus.tts("train") if r.speaker in seen], cfg.train_per_speaker, rng)
    test_rows = _sample([r for r in corpus.tts("test") if r.speaker in seen], cfg.test_per_speaker, rng)
    if not train_rows or not test_rows:
        raise ValueError(f"corpus {corpus.root} needs seen-speaker utterances in both train and test splits")
    train = encode_utterances(tok, corpus, train_rows, cfg.batch_size)
    test = encode_utterances(tok, corpus, test_rows, cfg.batch_size)
    y_train, y_test = [e.utt.speaker for e in train], [e.utt.speaker for e in test]
    views = {name: list(idx) for name, idx in probe_views(tok).items()}
    accuracy, frame_accuracy = {}, {}
    for name, idx in views.items():
        feats = [np.stack([code_histogram(e.codes, tuple(idx), tok.codebook_sizes) for e in split]) for split in (train, test)]
        accuracy[name] = speaker_probe_accuracy(feats[0], y_train, feats[1], y_test)
        frame_accuracy[name] = frame_probe_accuracy(train, test, tuple(idx), tok.codebook_sizes)
    if tok.speaker_dim:
        views["timbre"] = []
        vecs = [np.stack([e.speaker_vector for e in split]) for split in (train, test)]
        accuracy["timbre"] = speaker_probe_accuracy(vecs[0], y_train, vecs[1], y_test)
    n_speakers = len(set(y_train))
    twins = twin_pairs(corpus, set(y_train) & set(y_test))
    twin_acc: dict[str, float] = {}
    twin_frame: dict[str, float] = {}
    for name, idx in views.items():
        if not idx or not twins:
            continue
        scores = [twin_probe(train, test, pair, tuple(idx), tok.codebook_sizes) for pair in twins]
        twin_acc[name] = float(np.mean([u for u, _ in scores]))
        twin_frame[name] = float(np.mean([f for _, f in scores]))
    report = ProbeReport(
        tokenizer=tok.describe(),
        coupling=tok.coupling,
        speakers=n_speakers,
        chance=1.0 / n_speakers,
        n_train=len(train),
        n_test=len(test),
        accuracy=accuracy,
        frame_accuracy=frame_accuracy,
        views=views,
        twins=[list(p) for p in twins],
        twin_accuracy=twin_acc,
        twin_frame_accuracy=twin_frame,
    )
    if judge is not None and tok.speaker_dim and hasattr(tok, "decode_streams"):
        test_all = _sample(corpus.tts("test"), cfg.test_per_speaker, rng)
        report.voice_conversion = voice_conversion(tok, corpus, test_all, judge, cfg)
    return report


@torch.no_grad()
def voice_conversion(
    tok: SpeechTokenizer, corpus: Corpus, rows: list[Utterance], judge: SpeakerEmbedder, cfg: ProbeConfig
) -> VoiceConversionResult:
    """Prosody + content of A with the timbre vector of B; is the judge's embedding closer to B than A?"""
    rng = random.Random(cfg.seed + 1)
    streams = tuple(k for k, s in enumerate(tok.streams) if s.kind in ("prosody", "content"))
    encoded = encode_utterances(tok, corpus, rows, cfg.batch_size)
    by_speaker: dict[str, list[EncodedUtterance]] = defaultdict(list)
    for e in encoded:
        by_speaker[e.utt.speaker].append(e)
    speakers = sorted(s for s, items in by_speaker.items() if len(items) >= 2)
    if len(speakers) < 2:
        raise ValueError("voice conversion needs >= 2 test speakers with >= 2 utterances each")
    embed_cache: dict[str, np.ndarray] = {}

    def embed_utt(e: EncodedUtterance) -> np.ndarray:
        if e.utt.id not in embed_cache:
            wav = load_audio(corpus.audio_path(e.utt), sample_rate=judge.sample_rate).wav
            embed_cache[e.utt.id] = judge.embed(wav)
        return embed_cache[e.utt.id]

    def reference(speaker: str, exclude: str) -> np.ndarray:
        others = [e for e in by_speaker[speaker] if e.utt.id != exclude][: cfg.reference_utterances]
        return np.mean([embed_utt(e) for e in others], axis=0)

    def render(src: EncodedUtterance, timbre: np.ndarray) -> np.ndarray:
        codes = torch.from_numpy(src.codes[list(streams)]).unsqueeze(0)
        lengths = torch.tensor([codes.shape[-1]])
        out = tok.decode_streams(codes, streams, lengths, torch.from_numpy(timbre).unsqueeze(0))
        return resample(out.wav[0, : int(out.lengths[0])].numpy(), tok.sample_rate, judge.sample_rate)

    items = []
    for _ in tqdm(range(cfg.vc_pairs), desc="voice conversion", leave=False):
        a, b = rng.sample(speakers, 2)
        src, tgt = rng.choice(by_speaker[a]), rng.choice(by_speaker[b])
        ref_a, ref_b = reference(a, src.utt.id), reference(b, tgt.utt.id)
        converted = judge.embed(render(src, tgt.speaker_vector))
        control = judge.embed(render(src, src.speaker_vector))
        items.append(
            {
                "source": src.utt.id,
                "target": tgt.utt.id,
                "sim_to_target": _cosine(converted, ref_b),
                "sim_to_source": _cosine(converted, ref_a),
                "control_sim_to_source": _cosine(control, ref_a),
                "control_sim_to_target": _cosine(control, ref_b),
            }
        )
    mean = {k: float(np.mean([it[k] for it in items])) for k in items[0] if k.startswith(("sim", "control"))}
    return VoiceConversionResult(
        pairs=len(items),
        success_rate=float(np.mean([it["sim_to_target"] > it["sim_to_source"] for it in items])),
        items=items,
        **mean,
    )
