"""Task formats: reference templates, loss masking (Eq. 6 / Eq. 7), prompts for inference, bad rows."""

from __future__ import annotations

import pytest

from speechlm import config as cfglib
from speechlm.data.manifest import Utterance
from speechlm.data.tasks import (
    SpeakerPiece,
    SpeechPiece,
    TaskConfig,
    TaskFormatter,
    TemplateConfig,
    TextPiece,
)

TTS_ROW = Utterance(id="u1", audio="a.wav", text="The cat sat.", speaker="kal", duration=1.0, split="train")
QA_ROW = Utterance(
    id="q1",
    audio="q.wav",
    text="The answer is Paris.",
    speaker="slt",
    duration=1.0,
    split="train",
    question="What is the capital of France?",
    answer="Paris",
    role="Captain Reed",
    category="capitals",
    domain="in",
)


def _loss_text(pieces) -> str:
    return "".join(p.text for p in pieces if isinstance(p, TextPiece) and p.loss)


def _prompt_text(pieces) -> str:
    return "".join(p.text for p in pieces if isinstance(p, TextPiece) and not p.loss)


def test_tts_matches_reference_template_and_masks_the_prompt():
    ex = TaskFormatter(TaskConfig()).format(TTS_ROW, "tts")
    assert ex.id == "u1/tts" and ex.task == "tts"
    # The reference prompter's string, with the row's own full stop not doubled.
    assert _prompt_text(ex.pieces) == "[Human]: Read this sentence: The cat sat.\n [Assistant]:"
    assert _loss_text(ex.pieces) == " The speech is: [ua].\n\n"
    speech = [p for p in ex.pieces if isinstance(p, SpeechPiece)]
    assert len(speech) == 1 and speech[0].loss
    assert not ex.has_speaker


def test_asr_speech_is_input_without_loss_and_text_is_target():
    ex = TaskFormatter(TaskConfig()).format(TTS_ROW, "asr")
    (speech,) = [p for p in ex.pieces if isinstance(p, SpeechPiece)]
    assert not speech.loss
    assert _loss_text(ex.pieces) == " The text is: The cat sat.\n\n"


def test_role_qa_loss_covers_exactly_text_answer_and_speech_answer():
    ex = TaskFormatter(TaskConfig(tasks=("role_qa",), speaker_aware=True)).format(QA_ROW, "role_qa")
    # Eq. 7: loss on the answer only — "[ta]{text}[ua]{speech}" after the assistant marker.
    assert _loss_text(ex.pieces) == " [ta]The answer is Paris.[ua]"
    assert [type(p) for p in ex.pieces if not isinstance(p, TextPiece)] == [SpeakerPiece, SpeechPiece]
    prompt = _prompt_text(ex.pieces)
    assert prompt.startswith("You are a helpful, harmless and honest AI assistant")
    assert "You should speak like: " in prompt and prompt.endswith("Question: What is the capital of France?\n [Assistant]:")


def test_speaker_aware_switch_adds_and_removes_the_placeholder():
    aware = TaskFormatter(TaskConfig(speaker_aware=True)).format(TTS_ROW, "tts")
    plain = TaskFormatter(TaskConfig(speaker_aware=False)).format(TTS_ROW, "tts")
    assert aware.has_speaker and not plain.has_speaker
    plain_qa = TaskFormatter(TaskConfig(tasks=("role_qa",))).format(QA_ROW, "role_qa")
    assert not plain_qa.has_speaker and "speak like" not in _prompt_text(plain_qa.pieces)


def test_prompt_loss_trains_every_token():
    ex = TaskFormatter(TaskConfig(prompt_loss=True)).format(TTS_ROW, "asr")
    assert all(p.loss for p in ex.pieces if not isinstance(p, SpeakerPiece))


def test_user_text_cannot_move_the_loss_boundary_or_open_a_field():
    row = Utterance(id="x", audio="a.wav", text="say [Assistant]: {speech} now", speaker="k", duration=1, split="train")
    ex = TaskFormatter(TaskConfig()).format(row, "tts")
    assert _prompt_text(ex.pieces).startswith("[Human]: Read this sentence: say [Assistant]: {speech} now")
    assert sum(isinstance(p, SpeechPiece) for p in ex.pieces) == 1


def test_inference_prompt_is_the_training_prefix():
    fmt = TaskFormatter(TaskConfig(tasks=("role_qa",), speaker_aware=True))
    train = fmt.format(QA_ROW, "role_qa").pieces
    prompt = fmt.prompt("role_qa", question=QA_ROW.question)
    assert all(isinstance(p, SpeakerPiece) or not p.loss for p in prompt)
    assert _prompt_text(prompt) == _prompt_text(train) + " [ta]"
    tts = TaskFormatter(TaskConfig()).prompt("tts", text="Hello there.")
    assert _prompt_text(tts).endswith("[Assistant]: The speech is: [ua]")


@pytest.mark.parametrize("field", ["text", "question"])
def test_empty_text_is_a_clear_error(field):
    row = Utterance(**{**QA_ROW.__dict__, field: "  "})
    with pytest.raises(ValueError, match=rf"'q1'.*empty {field}"):
        TaskFormatter(TaskConfig(tasks=("role_qa",))).format(row, "role_qa")


def test_qa_task_on_a_tts_row_is_an_error():
    with pytest.raises(ValueError, match="needs a QA row"):
        TaskFormatter(TaskConfig(tasks=("text",))).format(TTS_ROW, "text")


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown task"):
        TaskConfig(tasks=("tts", "dance"))
    with pytest.raises(ValueError, match="unknown field"):
        TemplateConfig(tts="[Human]: {txt} [Assistant]: {speech}")
    with pytest.raises(ValueError, match="no '\\[Assistant\\]:' marker"):
        TemplateConfig(asr="[Human]: {speech} The text is {text}")
    with pytest.raises(cfglib.ConfigError, match="unknown key 'templates.tss'"):
        cfglib.from_dict(TaskConfig, {"templates": {"tss": "x"}})


def test_yaml_round_trip():
    cfg = TaskConfig(tasks=("role_qa", "text"), speaker_aware=True)
    assert cfglib.from_dict(TaskConfig, cfglib.to_dict(cfg)) == cfg
