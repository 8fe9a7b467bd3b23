"""`speechlm data check DIR`: validate a corpus folder and list *every* bad item.

A corpus feeds tokenizer training, SLM training and the seen/unseen evaluation, so a silent defect
(a truncated wav, a test sentence that leaked into train, an unseen speaker in train) corrupts
results far downstream. The check reads every row of ``tts.jsonl`` and ``qa.jsonl`` and every
audio file, collects all problems without stopping at the first, and reports each with its file,
line and id. Problem kinds (``Issue.kind``):

- rows:  ``bad_row`` (unparseable / wrong fields), ``bad_split``, ``duplicate_id``, ``empty_text``,
  ``unknown_speaker``, ``unknown_role``, ``role_mismatch``, ``bad_answer`` (text is not
  "The answer is X.", study App. G.2);
- audio: ``missing_audio``, ``corrupt_audio``, ``bad_format`` (not mono 16-bit at the corpus rate),
  ``duration_range``, ``duration_mismatch`` (manifest vs file);
- splits: ``unseen_in_train`` (unseen speaker or role outside test, study §4.3), ``test_in_train``
  (a test sentence or QA question also in train), ``domain_in_train`` (out-of-domain QA outside test);
- folder: ``bad_metadata`` (corpus.json missing or malformed), ``missing_manifest``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import soundfile as sf

from speechlm.audio import AudioError, load_audio
from speechlm.data.facts import answer_text
from speechlm.data.manifest import ManifestError, Utterance, iter_manifest

MIN_DURATION = 0.2  # seconds; shorter is a failed synthesis or a truncated file
MAX_DURATION = 30.0  # seconds; longer than any corpus utterance, and than tokenizer batches expect
DURATION_TOLERANCE = 0.02  # seconds between the manifest's duration and the file's
MANIFESTS = ("tts.jsonl", "qa.jsonl")


@dataclass(frozen=True)
class Issue:
    kind: str
    where: str  # "tts.jsonl:12", a file, or the folder
    id: str | None
    message: str


@dataclass(frozen=True)
class CheckReport:
    root: Path
    issues: tuple[Issue, ...]
    rows: dict[str, int]  # manifest name -> rows read (bad ones included)
    audio_checked: int

    @property
    def ok(self) -> bool:
        return not self.issues

    def by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(i.kind for i in self.issues).items()))

    def format(self) -> str:
        rows = ", ".join(f"{name} {n}" for name, n in self.rows.items())
        head = f"checked {self.root}: {rows} rows, {self.audio_checked} audio files"
        if self.ok:
            return f"{head}: OK"
        kinds = ", ".join(f"{k} {n}" for k, n in self.by_kind().items())
        lines = [f"{head}: {len(self.issues)} problem(s) ({kinds})"]
        lines += [f"  {i.kind:<18} {i.where:<24} {i.id or '-':<28} {i.message}" for i in self.issues]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "rows": self.rows,
            "audio_checked": self.audio_checked,
            "by_kind": self.by_kind(),
            "issues": [asdict(i) for i in self.issues],
        }

    def write_json(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


@dataclass
class _Context:
    """What rows are checked against, plus the findings so far."""

    root: Path
    sample_rate: int = 16000
    speakers: dict[str, bool] | None = None  # name -> seen; None when corpus.json is unusable
    roles: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (speaker, seen)
    issues: list[Issue] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # id -> where first seen
    audio_checked: int = 0

    def add(self, kind: str, where: str, uid: str | None, message: str) -> None:
        self.issues.append(Issue(kind, where, uid, message))


def _read_metadata(ctx: _Context) -> None:
    path = ctx.root / "corpus.json"
    if not path.is_file():
        ctx.add("bad_metadata", "corpus.json", None, "corpus.json is missing; speakers cannot be checked")
        return
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        ctx.sample_rate = int(info.get("sample_rate", 16000))
        ctx.speakers = {str(s["name"]): bool(s["seen"]) for s in info["speakers"]}
        ctx.roles = {str(r["name"]): (str(r["speaker"]), bool(r["seen"])) for r in info.get("roles", [])}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        ctx.speakers = None
        ctx.add("bad_metadata", "corpus.json", None, f"unreadable speakers/roles ({type(err).__name__}: {err})")


def _check_fields(ctx: _Context, u: Utterance, where: str) -> None:
    if u.id in ctx.ids:
        ctx.add("duplicate_id", where, u.id, f"id already used at {ctx.ids[u.id]}")
    else:
        ctx.ids[u.id] = where
    for name in ("text", "question", "answer"):
        value = getattr(u, name)
        if value is not None and not value.strip():
            ctx.add("empty_text", where, u.id, f"'{name}' is empty")
    if ctx.speakers is not None:
        if u.speaker not in ctx.speakers:
            ctx.add("unknown_speaker", where, u.id, f"speaker {u.speaker!r} is not in corpus.json")
        elif not ctx.speakers[u.speaker] and u.split != "test":
            ctx.add("unseen_in_train", where, u.id, f"unseen speaker {u.speaker!r} in split {u.split!r}")
    if u.is_qa:
        _check_qa(ctx, u, where)


def _check_qa(ctx: _Context, u: Utterance, where: str) -> None:
    if u.answer and u.text != answer_text(u.answer):
        ctx.add("bad_answer", where, u.id, f"text {u.text!r} is not {answer_text(u.answer)!r}")
    if u.domain == "out" and u.split != "test":
        ctx.add("domain_in_train", where, u.id, f"out-of-domain QA in split {u.split!r}")
    if ctx.speakers is None:
        return
    if u.role not in ctx.roles:
        ctx.add("unknown_role", where, u.id, f"role {u.role!r} is not in corpus.json")
        return
    speaker, seen = ctx.roles[u.role]
    if speaker != u.speaker:
        ctx.add("role_mismatch", where, u.id, f"role {u.role!r} speaks as {speaker!r}, row says {u.speaker!r}")
    if not seen and u.split != "test":
        ctx.add("unseen_in_train", where, u.id, f"unseen role {u.role!r} in split {u.split!r}")


def _check_audio(ctx: _Context, u: Utterance, where: str) -> None:
    path = Path(u.audio) if Path(u.audio).is_absolute() else ctx.root / u.audio
    ctx.audio_checked += 1
    try:
        info = sf.info(str(path)) if path.is_file() and path.stat().st_size > 0 else None
        audio = load_audio(path)
    except FileNotFoundError:
        ctx.add("missing_audio", where, u.id, f"audio file not found: {u.audio}")
        return
    except AudioError as err:
        ctx.add("corrupt_audio", where, u.id, str(err))
        return
    except (sf.LibsndfileError, RuntimeError) as err:  # sf.info on a corrupt header
        ctx.add("corrupt_audio", where, u.id, f"{path}: {err}")
        return
    if info is not None and (info.channels != 1 or info.samplerate != ctx.sample_rate or info.subtype != "PCM_16"):
        ctx.add(
            "bad_format", where, u.id,
            f"{u.audio}: {info.channels} ch, {info.samplerate} Hz, {info.subtype}; "
            f"want 1 ch, {ctx.sample_rate} Hz, PCM_16",
        )
    if not MIN_DURATION <= audio.duration <= MAX_DURATION:
        limits = f"[{MIN_DURATION}, {MAX_DURATION}] s"
        ctx.add("duration_range", where, u.id, f"audio is {audio.duration:.3f} s, outside {limits}")
    if abs(audio.duration - u.duration) > DURATION_TOLERANCE:
        ctx.add("duration_mismatch", where, u.id, f"manifest says {u.duration:.3f} s, file is {audio.duration:.3f} s")


def _check_manifest(ctx: _Context, name: str) -> tuple[int, list[tuple[str, Utterance]]]:
    """Check every row of one manifest; return (rows read, the parsed rows with their location)."""
    path = ctx.root / name
    if not path.is_file():
        if name == "tts.jsonl":
            ctx.add("missing_manifest", name, None, f"{path} is missing")
        return 0, []
    n_rows, parsed = 0, []
    for line, item in iter_manifest(path):
        n_rows += 1
        where = f"{name}:{line}"
        if isinstance(item, ManifestError):
            kind = "bad_split" if item.field == "split" else "bad_row"
            ctx.add(kind, where, item.uid, str(item).removeprefix(f"{path}:{line}: "))
            continue
        _check_fields(ctx, item, where)
        _check_audio(ctx, item, where)
        parsed.append((where, item))
    return n_rows, parsed


def _check_leaks(ctx: _Context, rows: list[tuple[str, Utterance]]) -> None:
    """Test sentences (TTS) and test questions (QA) must not occur in train (issue 7: evaluate
    on sentences not in training data; study §4.3: held-out questions)."""

    def key(u: Utterance) -> str:
        return (u.question if u.is_qa else u.text).strip().lower()

    train = {(u.is_qa, key(u)) for _, u in rows if u.split == "train"}
    for where, u in rows:
        if u.split == "test" and (u.is_qa, key(u)) in train:
            what = "question" if u.is_qa else "sentence"
            ctx.add("test_in_train", where, u.id, f"test {what} also in train: {key(u)!r}")


def check_corpus(root: Path) -> CheckReport:
    """Validate the corpus folder ``root``; every problem found becomes one :class:`Issue`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {root}")
    ctx = _Context(root=root)
    _read_metadata(ctx)
    counts, rows = {}, []
    for name in MANIFESTS:
        counts[name], parsed = _check_manifest(ctx, name)
        rows += parsed
    _check_leaks(ctx, rows)
    return CheckReport(root=root, issues=tuple(ctx.issues), rows=counts, audio_checked=ctx.audio_checked)
