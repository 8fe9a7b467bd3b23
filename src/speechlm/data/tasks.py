"""Task formats: how one corpus row becomes one interleaved text–speech training sequence.

Four tasks, with the released reference code's prompt strings as the defaults
(``src/utils/prompter.py`` of cnxupupup/SLM-Decoupled-MTP; the study's §3.2 and Appendix G.3):

- ``tts``     ``[Human]: Read this sentence: {text}.\\n [Assistant]: The speech is: [ua]{speech}.``
              (+ ``You should speak like: <|spk_emb|>.`` when speaker-aware, study §2.3)
- ``asr``     ``[Human]: Recognize this speech: [ua]{speech}.\\n [Assistant]: The text is: {text}.``
- ``text``    ``[Human]: {question}\\n [Assistant]: {answer}`` — text-only QA that keeps the LLM's text
              ability during SFT (Appendix G.1 mixes ~26k text QA samples into stage 2)
- ``role_qa`` Appendix G.3: ``{system} [Human]: Respond to this text question, ... You should speak like:
              <|spk_emb|>. Question: {question}\\n [Assistant]: [ta]{text}[ua]{speech}``

A template is a ``str.format`` string. ``{text}``, ``{question}``, ``{answer}`` and ``{system}`` are
filled with text; ``{speech}`` marks where the utterance's speech groups go (the speech ends with the
layout's END id, the reference code's ``<eosp>``), and ``{speaker}`` marks the one position whose
embedding the model replaces with the projected speaker vector. Loss masking follows the reference
code's ``tokenize``: everything up to and including the assistant marker is prompt (no loss) and
everything after it is the response (loss) — for role-QA that is exactly the text answer + speech
answer of Eq. 7; ``prompt_loss: true`` instead trains on every token, the literal reading of Eq. 6.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Literal, get_args

from speechlm.data.manifest import Utterance
from speechlm.layout.vocab import ASSISTANT

Task = Literal["tts", "asr", "text", "role_qa"]
TASKS: tuple[str, ...] = get_args(Task)
SPEECH_TASKS: frozenset[str] = frozenset({"tts", "asr", "role_qa"})  # tasks that read cached codes

_SYSTEM = (
    "You are a helpful, harmless and honest AI assistant whose name is Mini-GPT4o. Mini-GPT4o is capable of "
    "handling speech and text inputs while responding the user by accurate, polite and safe cross-modal outputs."
)
_TEXT_FIELDS = frozenset({"text", "question", "answer", "system"})
_SLOT_FIELDS = frozenset({"speech", "speaker"})
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class TemplateConfig:
    """Prompt templates (YAML maps 1:1). Defaults are the reference code's strings."""

    tts: str = "[Human]: Read this sentence: {text}.\n [Assistant]: The speech is: [ua]{speech}.\n\n"
    tts_speaker: str = (
        "[Human]: Read this sentence: {text}. You should speak like: {speaker}.\n"
        " [Assistant]: The speech is: [ua]{speech}.\n\n"
    )
    asr: str = "[Human]: Recognize this speech: [ua]{speech}.\n [Assistant]: The text is: {text}.\n\n"
    # Eq. 5 puts the speaker representation ahead of the context of every sequence, so a
    # speaker-aware model sees it in ASR too (the reference code only shows its TTS form).
    asr_speaker: str = (
        "[Human]: Recognize this speech, spoken like: {speaker}: [ua]{speech}.\n [Assistant]: The text is: {text}.\n\n"
    )
    text: str = "[Human]: {question}\n [Assistant]: {answer}\n\n"
    role_qa: str = (
        "{system} [Human]: Respond to this text question, you can first generate a text answer and read this "
        "answer. You should speak like: {speaker}. Question: {question}\n [Assistant]: [ta]{text}[ua]{speech}"
    )
    role_qa_plain: str = (  # role-QA without a speaker vector (the speaker-unaware ablation)
        "{system} [Human]: Respond to this text question, you can first generate a text answer and read this "
        "answer. Question: {question}\n [Assistant]: [ta]{text}[ua]{speech}"
    )
    system: str = _SYSTEM

    def __post_init__(self) -> None:
        for name in ("tts", "tts_speaker", "asr", "asr_speaker", "text", "role_qa", "role_qa_plain"):
            _check_template(name, getattr(self, name))


@dataclass(frozen=True)
class TaskConfig:
    """Which tasks make the training mixture and how their sequences are formed."""

    tasks: tuple[Task, ...] = ("tts", "asr")  # stage 1 (§3.2, Eq. 6); stage 2 uses ("role_qa",) (Eq. 7)
    speaker_aware: bool = False  # put the speaker placeholder into tts/role_qa prompts (§2.3)
    prompt_loss: bool = False  # True: loss on the prompt too (Eq. 6 read literally); False: reference code
    templates: TemplateConfig = field(default_factory=TemplateConfig)
    # Times each task's training rows enter one epoch (default 1; the validation split is never
    # repeated). Stage 2 of the `large` corpus has 900 role-QA rows against 18,000 TTS rehearsal
    # rows; {role_qa: 10} makes QA a third of the mixture instead of 5 %.
    repeat: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("tasks is empty; choose from " + ", ".join(TASKS))
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks lists a task twice: {list(self.tasks)}")
        for task, times in self.repeat.items():
            if task not in self.tasks:
                raise ValueError(f"repeat names {task!r}, which is not in tasks {list(self.tasks)}")
            if isinstance(times, bool) or not isinstance(times, int) or times < 1:
                raise ValueError(f"repeat[{task!r}] must be a whole number >= 1, got {times!r}")

    @property
    def needs_speech(self) -> bool:
        return any(t in SPEECH_TASKS for t in self.tasks)


# -- pieces of a formatted sequence -------------------------------------------------------------


@dataclass(frozen=True)
class TextPiece:
    text: str
    loss: bool
    # The {text} field: the words the row's speech says (tts, role_qa) or that transcribe it (asr) --
    # what guided attention aligns the speech with (``model.guided``).
    aligned: bool = False


@dataclass(frozen=True)
class SpeechPiece:
    """Where the utterance's speech groups (ending with END) go."""

    loss: bool


@dataclass(frozen=True)
class SpeakerPiece:
    """The placeholder position whose embedding becomes the projected speaker vector (§2.3)."""


Piece = TextPiece | SpeechPiece | SpeakerPiece


@dataclass(frozen=True)
class FormattedExample:
    """One training sequence before tokenisation: an id, its task and its pieces in order."""

    id: str  # "<utterance id>/<task>", unique across the mixture
    utt_id: str
    task: Task
    pieces: tuple[Piece, ...]

    @property
    def has_speech(self) -> bool:
        return any(isinstance(p, SpeechPiece) for p in self.pieces)

    @property
    def has_speaker(self) -> bool:
        return any(isinstance(p, SpeakerPiece) for p in self.pieces)


class TaskFormatter:
    """Turns corpus rows into :class:`FormattedExample` s (training) or prompts (inference)."""

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg

    def template(self, task: Task) -> str:
        t = self.cfg.templates
        if task == "tts":
            return t.tts_speaker if self.cfg.speaker_aware else t.tts
        if task == "asr":
            return t.asr_speaker if self.cfg.speaker_aware else t.asr
        if task == "role_qa":
            return t.role_qa if self.cfg.speaker_aware else t.role_qa_plain
        if task == "text":
            return t.text
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")

    def format(self, utt: Utterance, task: Task) -> FormattedExample:
        """The full training sequence of ``utt`` for ``task``; bad rows raise ValueError naming the id."""
        values = self._values(utt, task)
        pieces = _render(self.template(task), values, prompt_loss=self.cfg.prompt_loss, where=utt.id)
        return FormattedExample(id=f"{utt.id}/{task}", utt_id=utt.id, task=task, pieces=pieces)

    def prompt(self, task: Task, *, text: str = "", question: str = "") -> tuple[Piece, ...]:
        """The inference prompt: the template up to where the model starts generating.

        For ``tts`` that is just after ``[ua]`` (the model emits speech groups until END); for
        ``role_qa`` and ``text`` just after the assistant marker (+ ``[ta]``), so the model writes
        the text answer, then ``[ua]`` and the speech; for ``asr`` the prompt holds a
        :class:`SpeechPiece` for the caller's input speech.
        """
        template = self.template(task)
        if task == "tts":
            raise_if_empty(text, "text", "<prompt>")
        if task in ("role_qa", "text"):
            raise_if_empty(question, "question", "<prompt>")
        stop = {"tts": "{speech}", "asr": "{text}", "text": "{answer}", "role_qa": "{text}"}[task]
        head = template[: template.index(stop)]
        # Same text as training saw (`_values`): the tts/asr templates add their own full stop.
        spoken = _clean(text).removesuffix(".") if task in ("tts", "asr") else _clean(text)
        values = {"text": spoken, "question": _clean(question), "system": self.cfg.templates.system}
        return _render(head, values, prompt_loss=False, where="<prompt>", response_loss=False)

    def _values(self, utt: Utterance, task: Task) -> dict[str, str]:
        values = {"system": self.cfg.templates.system}
        if task in ("tts", "asr"):
            raise_if_empty(utt.text, "text", utt.id)
            # The template adds its own full stop after {text}; drop the row's so it is not doubled.
            values["text"] = _clean(utt.text).removesuffix(".")
        else:
            if utt.question is None or utt.answer is None:
                raise ValueError(f"utterance {utt.id!r}: task {task!r} needs a QA row (question + answer)")
            raise_if_empty(utt.question, "question", utt.id)
            raise_if_empty(utt.text, "text", utt.id)
            values["question"] = _clean(utt.question)
            # role_qa: {text} is the spoken text answer "The answer is X." (App. G.2); text task: the same.
            values["text"] = _clean(utt.text)
            values["answer"] = _clean(utt.text)
        return values


def raise_if_empty(value: str | None, field: str, where: str) -> None:
    if value is None or not value.strip():
        raise ValueError(f"utterance {where!r}: empty {field}")


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _check_template(name: str, template: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ValueError(f"template {name!r} is not a valid format string: {err}") from err
    unknown = sorted(set(fields) - _TEXT_FIELDS - _SLOT_FIELDS)
    if unknown:
        known = ", ".join("{" + f + "}" for f in sorted(_TEXT_FIELDS | _SLOT_FIELDS))
        raise ValueError(f"template {name!r} has unknown field(s) {unknown}; known: {known}")
    if fields.count("speech") > 1 or fields.count("speaker") > 1:
        raise ValueError(f"template {name!r} may hold {{speech}} and {{speaker}} at most once each")
    if ASSISTANT not in template:
        raise ValueError(f"template {name!r} has no {ASSISTANT!r} marker, so its response cannot be found")


def _render(
    template: str, values: dict[str, str], *, prompt_loss: bool, where: str, response_loss: bool = True
) -> tuple[Piece, ...]:
    """Walk the format string: text fields are substituted, slot fields become their own pieces.

    Loss starts after the first assistant marker (unless ``response_loss`` is off: inference prompts). Values are substituted after parsing, so a ``{`` or
    an ``[Assistant]:`` inside user text can neither open a field nor move the loss boundary.
    """
    pieces: list[Piece] = []
    in_response = False

    def add_text(text: str, literal: bool, aligned: bool = False) -> None:
        nonlocal in_response
        if literal and not in_response and ASSISTANT in text:
            cut = text.index(ASSISTANT) + len(ASSISTANT)
            _append_text(pieces, text[:cut], prompt_loss)
            in_response, text = response_loss, text[cut:]
        _append_text(pieces, text, in_response or prompt_loss, aligned)

    for literal, field, _, _ in string.Formatter().parse(template):
        add_text(literal, literal=True)
        if field is None:
            continue
        if field == "speech":
            pieces.append(SpeechPiece(loss=in_response or prompt_loss))
        elif field == "speaker":
            pieces.append(SpeakerPiece())
        elif field in values:
            add_text(values[field], literal=False, aligned=field == "text")
        else:
            raise ValueError(f"utterance {where!r}: template field {{{field}}} has no value for this task")
    return tuple(pieces)


def _append_text(pieces: list[Piece], text: str, loss: bool, aligned: bool = False) -> None:
    if not text:
        return
    last = pieces[-1] if pieces else None
    if isinstance(last, TextPiece) and (last.loss, last.aligned) == (loss, aligned):
        pieces[-1] = TextPiece(last.text + text, loss, aligned)  # merge, so tokenisation sees whole phrases
        return
    if aligned and isinstance(last, TextPiece) and last.text[-1:].isspace():
        # The space before the field goes with it (": " + "Please" -> ":" + " Please"), so that a BPE
        # pre-tokenizer, which splits punctuation from words, cuts the split pieces as it cuts the whole.
        stem = last.text.rstrip()
        text = last.text[len(stem) :] + text
        if stem:
            pieces[-1] = TextPiece(stem, last.loss, last.aligned)
        else:
            pieces.pop()
    pieces.append(TextPiece(text, loss, aligned))
