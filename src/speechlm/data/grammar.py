"""The closed-vocabulary sentence grammar of the built-in corpus, and its ASR-judge exports.

A small context-free grammar (``resources/grammar.yaml``) generates 3-12 word English sentences
over a few hundred word types. A closed vocabulary whose every word is in pocketsphinx's CMU
dictionary lets the offline ASR judge decode the corpus with a domain language model, which is
what makes WER a usable intelligibility measure here (study §4: WER judged by ASR). The grammar is
exported beside the corpus as ``words.txt``, ``domain.dic`` (CMU pronunciations) and
``domain.jsgf``; ``domain.lm`` comes from :mod:`speechlm.data.ngram`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

_NONTERMINAL = re.compile(r"<([A-Z_]+)>")
_WORD = re.compile(r"[a-z][a-z']*")
MAX_DEPTH = 12  # the grammar is not recursive; this only guards against a cycle in an edited file


@dataclass(frozen=True)
class Grammar:
    """``rules[name]`` = alternatives; each alternative is a tuple of tokens (``<X>`` or a word)."""

    start: str
    rules: dict[str, tuple[tuple[str, ...], ...]]

    def __post_init__(self) -> None:
        if self.start not in self.rules:
            raise ValueError(f"grammar start rule <{self.start}> is not defined")
        for name, alts in self.rules.items():
            if not alts:
                raise ValueError(f"grammar rule <{name}> has no alternatives")
            for alt in alts:
                for tok in alt:
                    ref = _NONTERMINAL.fullmatch(tok)
                    if ref and ref.group(1) not in self.rules:
                        raise ValueError(f"grammar rule <{name}> uses undefined rule <{ref.group(1)}>")
                    if not ref and not _WORD.fullmatch(tok):
                        raise ValueError(f"grammar rule <{name}>: {tok!r} is not a lowercase word or <RULE>")

    def words(self) -> list[str]:
        """Every terminal word, sorted."""
        return sorted({t for alts in self.rules.values() for alt in alts for t in alt if not _NONTERMINAL.fullmatch(t)})

    def sample(self, rng: random.Random) -> list[str]:
        """One sentence as a word list: each rule picks an alternative uniformly at random."""
        return self._expand(self.start, rng, 0)

    def _expand(self, name: str, rng: random.Random, depth: int) -> list[str]:
        if depth > MAX_DEPTH:
            raise ValueError(f"grammar expansion deeper than {MAX_DEPTH} at <{name}>: is it recursive?")
        out: list[str] = []
        for tok in rng.choice(self.rules[name]):
            ref = _NONTERMINAL.fullmatch(tok)
            out.extend(self._expand(ref.group(1), rng, depth + 1) if ref else [tok])
        return out

    def sample_unique(
        self, rng: random.Random, n: int, *, min_words: int = 3, max_words: int = 12, exclude: Iterable[str] = ()
    ) -> list[str]:
        """``n`` distinct sentences (space-joined, lowercase) of ``min_words..max_words`` words."""
        seen = set(exclude)
        out: list[str] = []
        # The sentence space is ~1e9; a cap on tries turns an impossible request into an error.
        for _ in range(50 * n + 1000):
            if len(out) == n:
                return out
            words = self.sample(rng)
            text = " ".join(words)
            if min_words <= len(words) <= max_words and text not in seen:
                seen.add(text)
                out.append(text)
        if len(out) < n:
            raise ValueError(
                f"grammar yields only {len(out)} distinct sentences of {min_words}-{max_words} words, asked {n}"
            )
        return out

    def to_jsgf(self, extra_rules: dict[str, list[str]] | None = None, name: str = "domain") -> str:
        """The grammar in JSGF (pocketsphinx's grammar format); ``extra_rules`` adds public alternatives."""
        lines = ["#JSGF V1.0;", "", f"grammar {name};", ""]
        publics = [f"<{self.start.lower()}>", *(f"<{r.lower()}>" for r in (extra_rules or {}))]
        lines.append(f"public <utterance> = {' | '.join(publics)};")
        for rule, alts in sorted(self.rules.items()):
            body = " | ".join(" ".join(t.lower() for t in alt) for alt in alts)
            lines.append(f"<{rule.lower()}> = {body};")
        for rule, alts in (extra_rules or {}).items():
            lines.append(f"<{rule.lower()}> = {' | '.join(alts)};")
        return "\n".join(lines) + "\n"


def load_grammar(path: str | Path | None = None) -> Grammar:
    """Read a grammar YAML (default: the packaged ``resources/grammar.yaml``)."""
    if path is None:
        text = resources.files("speechlm.data").joinpath("resources/grammar.yaml").read_text()
        source = "speechlm/data/resources/grammar.yaml"
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"grammar file not found: {path}")
        text, source = path.read_text(), str(path)
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or set(data) != {"start", "rules"}:
        raise ValueError(f"{source}: expected exactly the keys 'start' and 'rules'")
    rules = {}
    for name, alts in data["rules"].items():
        bad = [a for a in alts if not isinstance(a, str)]
        if bad:
            # YAML 1.1 reads bare on/off/yes/no as booleans: the word must be quoted.
            raise ValueError(f"{source}: rule <{name}> has non-string alternative(s) {bad}; quote them")
        rules[name] = tuple(tuple(alt.split()) for alt in alts)
    try:
        return Grammar(start=str(data["start"]), rules=rules)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err


def tokenize(text: str) -> list[str]:
    """Lowercase words of a sentence, punctuation dropped ("The answer is Paris." -> [the, answer, is, paris])."""
    return _WORD.findall(text.lower())


def cmu_dict_path() -> Path:
    """pocketsphinx's bundled CMU pronunciation dictionary (the ASR judge's default lexicon)."""
    import pocketsphinx

    return Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"


def load_pronunciations(words: Iterable[str], dict_path: str | Path | None = None) -> dict[str, list[str]]:
    """``word -> [pronunciation, ...]`` for ``words`` (alternates ``word(2)`` folded in)."""
    wanted = set(words)
    path = Path(dict_path) if dict_path is not None else cmu_dict_path()
    if not path.is_file():
        raise FileNotFoundError(f"pronunciation dictionary not found: {path}")
    prons: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            head, _, pron = line.strip().partition(" ")
            word = head.split("(", 1)[0]
            if word in wanted:
                prons.setdefault(word, []).append(pron.strip())
    return prons


def write_dictionary(words: Iterable[str], path: str | Path, dict_path: str | Path | None = None) -> Path:
    """Write a pocketsphinx ``.dic`` for ``words``; a word missing from the CMU dict is an error."""
    words = sorted(set(words))
    prons = load_pronunciations(words, dict_path)
    missing = [w for w in words if w not in prons]
    if missing:
        raise ValueError(f"{len(missing)} word(s) not in the CMU dictionary: {missing[:20]}")
    lines = []
    for w in words:
        for i, pron in enumerate(prons[w]):
            lines.append(f"{w if i == 0 else f'{w}({i + 1})'} {pron}")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
