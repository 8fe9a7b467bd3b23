"""A small n-gram language model estimator with an ARPA writer and reader.

Used to give the offline ASR judge a domain LM for the built-in corpus (``grammar/domain.lm``);
callable with any order and smoothing so the judge can tune how loose the LM is — a LM that is
too tight turns scrambled audio into fluent grammar sentences and hides bad speech.

Smoothing is *interpolated* (Chen & Goodman 1998, §2): for a history ``h`` with ``c(h)`` tokens and
``n(h)`` distinct continuations,

- absolute discounting:  P(w|h) = max(c(h,w) - D, 0) / c(h) + D·n(h)/c(h) · P(w|h')
- Witten-Bell:           P(w|h) = c(h,w) / (c(h)+n(h)) + n(h)/(c(h)+n(h)) · P(w|h')

where ``h'`` drops the oldest word, and the unigram level interpolates with the uniform
distribution over the vocabulary (so words of the closed vocabulary that the training text never
uses keep a small probability). An interpolated model is stored in ARPA back-off form exactly: a
seen n-gram's entry is its full interpolated probability and the back-off weight of ``h`` is the
interpolation weight ``γ(h)``, because an unseen ``w`` gets ``γ(h)·P(w|h')`` and nothing else.
With ``D = None`` the discount of each order is Ney's estimate ``n1 / (n1 + 2·n2)`` from that
order's count-of-counts.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

BOS, EOS = "<s>", "</s>"
LOG10_ZERO = -99.0  # ARPA convention for probability 0 (the <s> unigram)
Smoothing = Literal["absolute", "witten_bell"]
Ngram = tuple[str, ...]


@dataclass(frozen=True)
class NgramModel:
    """A back-off n-gram LM: ``probs[ngram]`` for listed n-grams, ``backoffs[history]`` weights."""

    order: int
    probs: dict[Ngram, float]  # P(w | h) for every listed (h..., w); probabilities, not logs
    backoffs: dict[Ngram, float]  # back-off weight of each history; absent = 1.0

    @property
    def vocab(self) -> list[str]:
        return sorted(g[0] for g in self.probs if len(g) == 1)

    def prob(self, word: str, history: Sequence[str] = ()) -> float:
        """P(word | history) by the ARPA back-off rule; ``history`` may be longer than order-1."""
        history = tuple(history)[-(self.order - 1) :] if self.order > 1 else ()
        weight = 1.0
        while True:
            p = self.probs.get((*history, word))
            if p is not None:
                return weight * p
            if not history:
                raise ValueError(f"word {word!r} is not in the LM vocabulary")
            weight *= self.backoffs.get(history, 1.0)
            history = history[1:]

    def sentence_logprob(self, words: Sequence[str]) -> float:
        """Natural-log probability of one sentence, including the end-of-sentence token."""
        padded = [BOS, *words, EOS]
        n = self.order
        return sum(math.log(self.prob(padded[i], padded[max(0, i - n + 1) : i])) for i in range(1, len(padded)))


def _count(sentences: Iterable[Sequence[str]], order: int) -> list[Counter[Ngram]]:
    """``counts[n-1][ngram]`` for n = 1..order over ``<s> w1 .. wk </s>`` (one ``<s>``, as SRILM)."""
    counts: list[Counter[Ngram]] = [Counter() for _ in range(order)]
    for words in sentences:
        padded = (BOS, *words, EOS)
        for i in range(1, len(padded)):  # the predicted token; <s> itself is never predicted
            for n in range(1, min(order, i + 1) + 1):
                counts[n - 1][padded[i - n + 1 : i + 1]] += 1
    return counts


def ney_discount(counts: Counter[Ngram]) -> float:
    """D = n1 / (n1 + 2 n2) (Ney, Essen & Kneser 1994), clipped into (0, 1]."""
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    return 0.5 if n1 == 0 else min(1.0, max(0.05, n1 / (n1 + 2 * n2)))


def _level(
    counts: Counter[Ngram], lower: dict[Ngram, float], smoothing: Smoothing, d: float
) -> tuple[dict[Ngram, float], dict[Ngram, float]]:
    """Interpolated probabilities of one order > 1 and the back-off weight of each history."""
    by_history: dict[Ngram, dict[str, int]] = defaultdict(dict)
    for gram, c in counts.items():
        by_history[gram[:-1]][gram[-1]] = c
    probs, gammas = {}, {}
    for h, follow in by_history.items():
        total, distinct = sum(follow.values()), len(follow)
        if smoothing == "absolute":
            gamma = d * distinct / total
            own = {w: max(c - d, 0.0) / total for w, c in follow.items()}
        else:
            gamma = distinct / (total + distinct)
            own = {w: c / (total + distinct) for w, c in follow.items()}
        gammas[h] = gamma
        for w, p in own.items():
            # (h[1:], w) is always listed: every suffix of a counted n-gram was counted too.
            probs[(*h, w)] = p + gamma * lower[(*h[1:], w)]
    return probs, gammas


def _unigram(counts: Counter[Ngram], smoothing: Smoothing, d: float, n_vocab: int) -> dict[Ngram, float]:
    """Unigram level interpolated with the uniform distribution (zero counts included)."""
    total = sum(counts.values())
    seen = sum(1 for c in counts.values() if c > 0)
    if smoothing == "absolute":
        gamma = d * seen / total
        return {g: max(c - d, 0.0) / total + gamma / n_vocab for g, c in counts.items()}
    denom = total + seen
    return {g: c / denom + seen / denom / n_vocab for g, c in counts.items()}


def estimate(
    sentences: Iterable[Sequence[str]],
    order: int = 3,
    smoothing: Smoothing = "absolute",
    discount: float | None = None,
    vocab: Iterable[str] = (),
) -> NgramModel:
    """Estimate an interpolated n-gram LM from tokenised sentences.

    ``vocab`` adds words that may be absent from ``sentences`` (they get only the uniform share).
    ``discount`` (absolute discounting only) is one D for all orders, or None for Ney's per-order D.
    """
    if order < 1:
        raise ValueError(f"n-gram order must be >= 1, got {order}")
    if smoothing not in ("absolute", "witten_bell"):
        raise ValueError(f"unknown smoothing {smoothing!r} (use 'absolute' or 'witten_bell')")
    if discount is not None and not 0.0 < discount <= 1.0:
        raise ValueError(f"discount must be in (0, 1], got {discount}")
    counts = _count(sentences, order)
    if not counts[0]:
        raise ValueError("cannot estimate an LM from no sentences")
    words = {g[0] for g in counts[0]} | {w for w in vocab if w != BOS} | {EOS}
    # Every vocabulary word is a unigram entry (count 0 -> only the uniform share).
    unigrams = Counter({(w,): counts[0].get((w,), 0) for w in words})
    d = discount if discount is not None else ney_discount(counts[0])
    probs = _unigram(unigrams, smoothing, d, len(words))
    backoffs: dict[Ngram, float] = {}
    for n in range(2, order + 1):
        d = discount if discount is not None else ney_discount(counts[n - 1])
        level, gammas = _level(counts[n - 1], probs, smoothing, d)
        probs.update(level)
        backoffs.update(gammas)
    probs[(BOS,)] = 0.0  # <s> is never predicted; it is listed only as a history
    return NgramModel(order=order, probs=probs, backoffs=backoffs)


def write_arpa(model: NgramModel, path: str | Path) -> Path:
    """Write ``model`` in ARPA format (log10 probabilities and back-off weights)."""
    by_order: list[list[Ngram]] = [[] for _ in range(model.order)]
    for gram in model.probs:
        by_order[len(gram) - 1].append(gram)
    lines = ["", "\\data\\"]
    lines += [f"ngram {n + 1}={len(grams)}" for n, grams in enumerate(by_order)]
    for n, grams in enumerate(by_order):
        lines += ["", f"\\{n + 1}-grams:"]
        for gram in sorted(grams):
            p = model.probs[gram]
            logp = LOG10_ZERO if p <= 0.0 else math.log10(p)
            line = f"{logp:.6f}\t{' '.join(gram)}"
            if n + 1 < model.order and gram in model.backoffs:
                line += f"\t{math.log10(model.backoffs[gram]):.6f}"
            lines.append(line)
    lines += ["", "\\end\\", ""]
    path = Path(path)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def read_arpa(path: str | Path) -> NgramModel:
    """Read an ARPA file back into an :class:`NgramModel` (for tests and for inspecting LMs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ARPA file not found: {path}")
    probs: dict[Ngram, float] = {}
    backoffs: dict[Ngram, float] = {}
    order, section = 0, 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line in ("\\data\\", "\\end\\") or line.startswith("ngram "):
            order = max(order, int(line.split("=")[0].split()[1])) if line.startswith("ngram ") else order
            continue
        if line.startswith("\\") and line.endswith("-grams:"):
            section = int(line[1:].split("-")[0])
            continue
        fields = line.split()
        if section == 0 or len(fields) not in (section + 1, section + 2):
            raise ValueError(f"{path}:{n}: malformed ARPA line {line!r}")
        gram = tuple(fields[1 : section + 1])
        logp = float(fields[0])
        probs[gram] = 0.0 if logp <= LOG10_ZERO else 10.0**logp
        if len(fields) == section + 2:
            backoffs[gram] = 10.0 ** float(fields[-1])
    if not probs:
        raise ValueError(f"{path}: no n-grams found")
    return NgramModel(order=order, probs=probs, backoffs=backoffs)


def build_arpa(
    sentences: Iterable[Sequence[str]],
    path: str | Path,
    order: int = 3,
    smoothing: Smoothing = "absolute",
    discount: float | None = None,
    vocab: Iterable[str] = (),
) -> NgramModel:
    """Estimate and write in one call: ``build_arpa(sents, "domain.lm", order=2, discount=0.9)``."""
    model = estimate(sentences, order=order, smoothing=smoothing, discount=discount, vocab=vocab)
    write_arpa(model, path)
    return model
