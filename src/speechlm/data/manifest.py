"""Corpus manifests: one JSONL row per utterance, and the corpus folder that holds them.

A corpus folder (made by ``speechlm data synth``) is::

    DIR/corpus.json   # preset, seed, sample_rate, speakers, roles, counts
    DIR/tts.jsonl     # {id, audio, text, speaker, duration, split}
    DIR/qa.jsonl      # + {question, answer, role, category, domain}   (spoken QA, study §3.1)
    DIR/audio/...wav  # 16 kHz mono PCM16; ``audio`` fields are relative to DIR

Reading is strict: a row that is not a JSON object, lacks a field, has a field of the wrong type or
an unknown field is a :class:`ManifestError` naming the file and the 1-based line, so a broken
manifest is fixed at its source rather than half-loaded. :func:`iter_manifest` yields those errors
instead of raising them, for ``speechlm data check`` which must list every bad row.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SPLITS: tuple[str, ...] = ("train", "val", "test")
DOMAINS: tuple[str, ...] = ("in", "out")
Split = Literal["train", "val", "test"]


class ManifestError(ValueError):
    """A manifest row that cannot be used; the message names the file and line.

    ``field`` names the offending field when one is to blame (e.g. "split"), for reports.
    """

    def __init__(self, message: str, field: str | None = None, uid: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.uid = uid  # the row's id when it could be read


@dataclass(frozen=True)
class Utterance:
    """One manifest row. The QA fields are ``None`` for plain TTS/ASR rows."""

    id: str
    audio: str  # path relative to the corpus folder (or absolute)
    text: str  # what the audio says; for QA rows the text answer "The answer is X." (study App. G.2)
    speaker: str  # voice name, a key of corpus.json "speakers"
    duration: float  # seconds
    split: Split
    question: str | None = None  # QA only: the text query
    answer: str | None = None  # QA only: the bare answer X (scored by EM/F1)
    role: str | None = None  # QA only: the persona whose voice speaks the answer
    category: str | None = None  # QA only: fact category (capitals, opposites, ...)
    domain: Literal["in", "out"] | None = None  # QA only: in-domain or held-out category

    @property
    def is_qa(self) -> bool:
        return self.question is not None

    def to_json(self) -> dict[str, object]:
        """The row as written: QA fields only when set, so TTS rows keep the six shared keys."""
        row = dataclasses.asdict(self)
        return {k: v for k, v in row.items() if v is not None or k in _REQUIRED}


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "audio": str,
    "text": str,
    "speaker": str,
    "duration": (int, float),
    "split": str,
    "question": str,
    "answer": str,
    "role": str,
    "category": str,
    "domain": str,
}
_REQUIRED = ("id", "audio", "text", "speaker", "duration", "split")
_QA_FIELDS = ("question", "answer", "role", "category", "domain")


def parse_row(line: str, where: str) -> Utterance:
    """Parse one JSONL line into an :class:`Utterance`; ``where`` is "file:line" for errors."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{where}: not valid JSON ({err.msg})") from err
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(row).__name__}")
    try:
        return _validate(row, where)
    except ManifestError as err:
        err.uid = row["id"] if isinstance(row.get("id"), str) else None
        raise


def _validate(row: dict, where: str) -> Utterance:
    unknown = sorted(set(row) - set(_FIELDS))
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {unknown} (known: {sorted(_FIELDS)})")
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {missing}")
    for key, value in row.items():
        # bool is an int subclass; a duration of `true` is a bug, not a number.
        if value is not None and (isinstance(value, bool) or not isinstance(value, _FIELDS[key])):
            raise ManifestError(f"{where}: field '{key}' has the wrong type: {value!r}", key)
    if row["split"] not in SPLITS:
        raise ManifestError(f"{where}: split {row['split']!r} is not one of {SPLITS}", "split")
    has_qa = [k for k in _QA_FIELDS if row.get(k) is not None]
    if has_qa and len(has_qa) != len(_QA_FIELDS):
        missing_qa = [k for k in _QA_FIELDS if k not in has_qa]
        raise ManifestError(f"{where}: QA row lacks field(s) {missing_qa}")
    if row.get("domain") is not None and row["domain"] not in DOMAINS:
        raise ManifestError(f"{where}: domain {row['domain']!r} is not one of {DOMAINS}", "domain")
    return Utterance(**{**row, "duration": float(row["duration"])})


def iter_manifest(path: str | Path) -> Iterator[tuple[int, Utterance | ManifestError]]:
    """Yield ``(line_number, row or error)`` for every non-blank line; never raises for bad rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield n, parse_row(line, f"{path}:{n}")
            except ManifestError as err:
                yield n, err


def read_manifest(path: str | Path) -> list[Utterance]:
    """All rows of a JSONL manifest; the first bad row raises :class:`ManifestError` (file:line)."""
    rows = []
    for _, item in iter_manifest(path):
        if isinstance(item, ManifestError):
            raise item
        rows.append(item)
    return rows


def write_manifest(path: str | Path, rows: Iterable[Utterance]) -> Path:
    """Write rows as JSONL (stable key order, UTF-8), atomically via a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class SpeakerInfo:
    name: str
    engine: str  # flite | festival | espeak
    voice: str  # the engine's voice id (+ variant)
    seen: bool  # seen speakers are in train/val/test; unseen ones only in test (study §4.3)
    gender: str


@dataclass(frozen=True)
class RoleInfo:
    name: str  # persona, e.g. "Captain Reed"
    speaker: str  # the voice that speaks this role's answers
    seen: bool  # seen roles appear in QA train/val/test; unseen roles only in QA test (study §3.1)


@dataclass(frozen=True)
class Corpus:
    """A corpus folder: its metadata and manifests, read once on :meth:`open`."""

    root: Path
    info: dict  # corpus.json as read
    speakers: dict[str, SpeakerInfo]
    roles: dict[str, RoleInfo]
    tts_rows: tuple[Utterance, ...]
    qa_rows: tuple[Utterance, ...]

    @classmethod
    def open(cls, root: str | Path) -> Corpus:
        root = Path(root)
        meta_path = root / "corpus.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"not a corpus folder (no corpus.json): {root}")
        try:
            info = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_path}: not valid JSON ({err.msg})") from err
        try:
            speakers = {s["name"]: SpeakerInfo(**s) for s in info["speakers"]}
            roles = {r["name"]: RoleInfo(**r) for r in info.get("roles", [])}
        except (KeyError, TypeError) as err:
            raise ValueError(f"{meta_path}: bad speakers/roles entry ({err})") from err
        qa_path = root / "qa.jsonl"
        return cls(
            root=root,
            info=info,
            speakers=speakers,
            roles=roles,
            tts_rows=tuple(read_manifest(root / "tts.jsonl")),
            qa_rows=tuple(read_manifest(qa_path)) if qa_path.exists() else (),
        )

    @property
    def sample_rate(self) -> int:
        return int(self.info.get("sample_rate", 16000))

    def tts(self, split: str | None = None) -> list[Utterance]:
        """TTS/ASR rows of one split (all rows when ``split`` is None)."""
        return _select(self.tts_rows, split)

    def qa(self, split: str | None = None, domain: str | None = None) -> list[Utterance]:
        """Spoken-QA rows of one split, optionally only one domain ("in" | "out")."""
        if domain is not None and domain not in DOMAINS:
            raise ValueError(f"domain {domain!r} is not one of {DOMAINS}")
        rows = _select(self.qa_rows, split)
        return rows if domain is None else [r for r in rows if r.domain == domain]

    def audio_path(self, utt: Utterance) -> Path:
        path = Path(utt.audio)
        return path if path.is_absolute() else self.root / path

    def seen_speakers(self) -> list[str]:
        return [name for name, s in self.speakers.items() if s.seen]

    def unseen_speakers(self) -> list[str]:
        return [name for name, s in self.speakers.items() if not s.seen]


def _select(rows: tuple[Utterance, ...], split: str | None) -> list[Utterance]:
    if split is None:
        return list(rows)
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    return [r for r in rows if r.split == split]


def spread(rows: list[Utterance], limit: int) -> list[Utterance]:
    """``limit`` rows at an even stride (all of them when ``limit`` is 0 or covers them). Manifests are
    grouped by speaker, so every speaker of a split stays represented; every evaluation that takes a
    subset (``speechlm eval --limit``, ``speechlm codec eval --max-items``, the text gain) uses this
    one rule, so their figures are on the same utterances."""
    if limit <= 0 or limit >= len(rows):
        return list(rows)
    return rows[:: math.ceil(len(rows) / limit)][:limit]
