"""The fact table behind the built-in spoken QA, shaped like RoleTriviaQA (study §3.1, App. G).

No trivia dataset is reachable offline, so questions come from a table kept in the repo
(``resources/facts.yaml``): categories of simple world knowledge a pretrained LLM already holds
(capitals, colours, animal sounds, arithmetic, ...). In-domain categories are split by *fact* into
train/val/test; out-of-domain categories are held out entirely and appear only in test — the
study's in-domain TriviaQA vs out-of-domain WebQuestions evaluation (§4.3, Table 3).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from speechlm.config import from_dict

_ONES = (
    "zero one two three four five six seven eight nine ten "
    "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}


def number_words(n: int) -> str:
    """0..100 as spoken English words, e.g. 42 -> "forty two" (every word is in the CMU dict)."""
    if not 0 <= n <= 100:
        raise ValueError(f"number_words covers 0..100, got {n}")
    if n == 100:
        return "one hundred"
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] if ones == 0 else f"{_TENS[tens]} {_ONES[ones]}"


def answer_text(answer: str) -> str:
    """The text answer format of RoleTriviaQA (study App. G.2): "The answer is X." """
    return f"The answer is {answer}."


@dataclass(frozen=True)
class Arithmetic:
    """Generate ``a op b`` for operands 0..max (minus: only non-negative results; times: 1..max)."""

    op: Literal["plus", "minus", "times"]
    max: int

    def facts(self) -> dict[str, str]:
        lo = 1 if self.op == "times" else 0
        out = {}
        for a in range(lo, self.max + 1):
            for b in range(lo, self.max + 1):
                value = _OPS[self.op](a, b)
                if 0 <= value <= 100:
                    out[f"{number_words(a)} {self.op} {number_words(b)}"] = number_words(value)
        return out


@dataclass(frozen=True)
class Category:
    domain: Literal["in", "out"]
    questions: tuple[str, ...]  # templates with "{subject}"
    facts: dict[str, str] = field(default_factory=dict)  # subject -> answer
    arithmetic: Arithmetic | None = None

    def __post_init__(self) -> None:
        if bool(self.facts) == (self.arithmetic is not None):
            raise ValueError("a category needs exactly one of 'facts' and 'arithmetic'")
        bad = [q for q in self.questions if "{subject}" not in q]
        if not self.questions or bad:
            raise ValueError(f"question templates must contain {{subject}}: {bad or 'none given'}")

    def table(self) -> dict[str, str]:
        return self.arithmetic.facts() if self.arithmetic is not None else self.facts


@dataclass(frozen=True)
class Fact:
    category: str
    domain: Literal["in", "out"]
    subject: str
    answer: str


@dataclass(frozen=True)
class QAItem:
    question: str  # text query
    answer: str  # bare answer X
    category: str
    domain: Literal["in", "out"]

    @property
    def text(self) -> str:
        return answer_text(self.answer)


@dataclass(frozen=True)
class FactTable:
    categories: dict[str, Category]

    def facts(self, domain: str | None = None) -> list[Fact]:
        """All facts (optionally of one domain), in file order."""
        return [
            Fact(name, cat.domain, subject, answer)
            for name, cat in self.categories.items()
            if domain is None or cat.domain == domain
            for subject, answer in cat.table().items()
        ]

    def ask(self, fact: Fact, rng: random.Random) -> QAItem:
        """Phrase ``fact`` with one of its category's question templates."""
        template = rng.choice(self.categories[fact.category].questions)
        return QAItem(template.format(subject=fact.subject), fact.answer, fact.category, fact.domain)


def load_facts(path: str | Path | None = None) -> FactTable:
    """Read a fact table (default: the packaged ``resources/facts.yaml``)."""
    if path is None:
        text = resources.files("speechlm.data").joinpath("resources/facts.yaml").read_text()
        source = "speechlm/data/resources/facts.yaml"
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"fact table not found: {path}")
        text, source = path.read_text(), str(path)
    table = from_dict(FactTable, yaml.safe_load(text), source=source)
    if not any(c.domain == "out" for c in table.categories.values()):
        raise ValueError(f"{source}: needs at least one out-of-domain category (domain: out)")
    return table
