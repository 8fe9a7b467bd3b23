"""SLM sequences, collation and length-bucketed batching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from slm_fakes import FrameTokenizer, make_mini_corpus

from speechlm.data.codes import build_code_cache
from speechlm.data.dataset import BucketBatchSampler, DataConfig, SequenceEncoder, collate, encode_split
from speechlm.data.tasks import TaskConfig, TaskFormatter, TextPiece
from speechlm.layout.speech import LayoutConfig, SpeechLayout
from speechlm.model.batch import IGNORE_INDEX
from speechlm.text.base import TextTokenizerConfig, build_text_tokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    corpus = make_mini_corpus(root / "corpus")
    tok = FrameTokenizer()
    cache = build_code_cache(corpus, tok, root / "cache", show_progress=False)
    texts = [r.text for r in corpus.tts()] + [f"{r.question} {r.text}" for r in corpus.qa()]
    texts.append("".join(TaskConfig().templates.__dict__.values()))
    text = build_text_tokenizer(TextTokenizerConfig(kind="char"), texts)
    return corpus, cache, text


def _layout(cache, g: int) -> SpeechLayout:
    return SpeechLayout(LayoutConfig(streams=(0, 1, 2), group_size=g), cache.codebook_sizes, cache.stream_names)


def _cfg(corpus: Path, **task) -> DataConfig:
    return DataConfig(corpus=corpus, task=TaskConfig(**task), batch_size=2)


@pytest.mark.parametrize("g", [1, 3, 6, 12])
def test_speech_positions_round_trip_to_the_cached_codes(setup, g):
    corpus, cache, text = setup
    layout = _layout(cache, g)
    examples, skipped = encode_split(corpus, "train", _cfg(corpus.root), SequenceEncoder(text, layout), cache)
    assert not skipped and len(examples) == 2 * 2  # 2 train TTS rows x (tts, asr)
    for ex in examples:
        utt = cache.get(ex.id.split("/")[0])
        speech = ex.speech_ids[ex.is_speech]  # [J, G]
        # MTP shortens the speech sequence g-fold: ceil((T*K + END) / g) positions (study §2.2).
        assert speech.shape[0] == -(-(utt.num_frames * 3 + 1) // g)
        decoded = layout.decode(speech[None])
        assert torch.equal(decoded.codes[0], utt.codes) and int(decoded.lengths[0]) == utt.num_frames


def test_loss_masks_follow_the_task(setup):
    corpus, cache, text = setup
    layout = _layout(cache, 3)
    examples, _ = encode_split(corpus, "train", _cfg(corpus.root), SequenceEncoder(text, layout), cache)
    by_task = {ex.id.split("/")[1]: ex for ex in examples if ex.id.startswith("u0/")}
    tts, asr = by_task["tts"], by_task["asr"]
    # TTS: every speech id is a target (PAD after END excepted); ASR: speech is input only.
    pad = layout.vocab.pad_id
    assert torch.equal(tts.speech_labels[tts.is_speech], tts.speech_ids[tts.is_speech].masked_fill(
        tts.speech_ids[tts.is_speech] == pad, IGNORE_INDEX))
    assert (asr.speech_labels == IGNORE_INDEX).all()
    # The text targets are exactly the response text + EOS, in order.
    asr_targets = asr.text_labels[asr.text_labels != IGNORE_INDEX].tolist()
    assert text.decode(asr_targets[:-1]) == " The text is: sentence 0.\n\n" and asr_targets[-1] == text.eos_id
    tts_targets = tts.text_labels[tts.text_labels != IGNORE_INDEX].tolist()
    assert text.decode(tts_targets[:-1]) == " The speech is: [ua].\n\n"
    # Text positions carry speech PAD; speech positions carry text pad.
    assert (tts.speech_ids[~tts.is_speech] == pad).all() and (tts.input_ids[tts.is_speech] == text.pad_id).all()


def test_speaker_placeholder_and_vector(setup):
    corpus, cache, text = setup
    cfg = _cfg(corpus.root, speaker_aware=True)
    examples, _ = encode_split(corpus, "train", cfg, SequenceEncoder(text, _layout(cache, 1)), cache)
    assert {e.id.split("/")[1] for e in examples} == {"tts", "asr"}
    for e in examples:  # Eq. 5: the speaker context precedes every speech sequence, TTS and ASR alike
        assert int(e.speaker_mask.sum()) == 1 and e.speaker is not None
        assert int(e.input_ids[e.speaker_mask]) == text.special_id("<|spk_emb|>")
        assert torch.equal(e.speaker, cache.get(e.id.split("/")[0]).speaker)
    text_only, _ = encode_split(
        corpus, "train", _cfg(corpus.root, tasks=("text",), speaker_aware=True), SequenceEncoder(text, _layout(cache, 1)), cache
    )
    batch = collate([examples[0], text_only[0]], text_pad_id=text.pad_id, speech_pad_id=0)
    assert batch.speaker.shape == (2, 4) and torch.equal(batch.speaker[1], torch.zeros(4))


def test_collate_pads_right_and_masks_padding(setup):
    corpus, cache, text = setup
    layout = _layout(cache, 6)
    examples, _ = encode_split(corpus, "train", _cfg(corpus.root), SequenceEncoder(text, layout), cache)
    batch = collate(examples, text_pad_id=text.pad_id, speech_pad_id=layout.vocab.pad_id)
    lengths = [e.length for e in examples]
    assert batch.input_ids.shape == (4, max(lengths)) and batch.speech_ids.shape == (4, max(lengths), 6)
    assert batch.attention_mask.sum(1).tolist() == lengths
    for b, n in enumerate(lengths):
        assert (batch.text_labels[b, n:] == IGNORE_INDEX).all() and (batch.speech_labels[b, n:] == IGNORE_INDEX).all()
        assert not batch.is_speech[b, n:].any()
    assert batch.ids == [e.id for e in examples] and batch.speaker is None


def test_role_qa_and_text_tasks_use_qa_rows(setup):
    corpus, cache, text = setup
    cfg = _cfg(corpus.root, tasks=("role_qa", "text"), speaker_aware=True)
    examples, _ = encode_split(corpus, "train", cfg, SequenceEncoder(text, _layout(cache, 3)), cache)
    assert sorted(e.id for e in examples) == ["q0/role_qa", "q0/text"]
    role, plain = sorted(examples, key=lambda e: e.id)
    assert role.is_speech.any() and role.speaker_mask.any()
    assert not plain.is_speech.any() and not plain.speaker_mask.any()
    # Eq. 7: the only text targets of role-QA are the answer ("[ta]The answer is two.[ua]") + EOS.
    targets = role.text_labels[role.text_labels != IGNORE_INDEX].tolist()
    assert text.decode(targets[:-1]) == " [ta]The answer is two.[ua]"


def test_repeat_upsamples_a_task_in_the_training_split_only(setup):
    corpus, cache, text = setup
    cfg = _cfg(corpus.root, tasks=("role_qa", "tts"), repeat={"role_qa": 3})
    encoder = SequenceEncoder(text, _layout(cache, 3))
    once, _ = encode_split(corpus, "train", cfg, encoder, cache)
    train, _ = encode_split(corpus, "train", cfg, encoder, cache, repeat=True)
    count = lambda xs, task: sum(e.id.endswith("/" + task) for e in xs)  # noqa: E731
    assert (count(once, "role_qa"), count(once, "tts")) == (1, 2)
    assert (count(train, "role_qa"), count(train, "tts")) == (3, 2)
    assert all(e is train[0] for e in train if e.id == train[0].id)  # encoded once, listed three times


@pytest.mark.parametrize(
    ("repeat", "match"),
    [({"asr": 2}, "'asr', which is not in tasks"), ({"tts": 0}, "whole number >= 1"), ({"tts": 1.5}, "whole number")],
)
def test_bad_repeat_is_an_error(repeat, match):
    with pytest.raises(ValueError, match=match):
        TaskConfig(tasks=("tts", "role_qa"), repeat=repeat)


def test_missing_codes_and_overlong_sequences(setup, tmp_path):
    corpus, _, text = setup
    partial = build_code_cache(corpus, FrameTokenizer(), tmp_path / "c", splits=("val",), show_progress=False)
    layout = _layout(partial, 1)
    with pytest.raises(ValueError, match="'u0' has no cached codes"):
        encode_split(corpus, "train", _cfg(corpus.root), SequenceEncoder(text, layout), partial)
    cfg = DataConfig(corpus=corpus.root, max_positions=80)
    examples, skipped = encode_split(corpus, "val", cfg, SequenceEncoder(text, layout), partial)
    assert len(examples) + len(skipped) == 2 and all("max_positions" in s.reason for s in skipped) and skipped


def test_formatter_texts_fit_the_char_alphabet(setup):
    corpus, _, text = setup
    fmt = TaskFormatter(TaskConfig(speaker_aware=True))
    for row in corpus.tts():
        for piece in fmt.format(row, "tts").pieces:
            if isinstance(piece, TextPiece):
                text.encode(piece.text)  # raises on a character outside the alphabet


# -- batching -------------------------------------------------------------------------------------


def test_bucket_sampler_covers_every_example_once_per_epoch():
    lengths = [(i * 37) % 101 + 1 for i in range(103)]
    sampler = BucketBatchSampler(lengths, 8, seed=3, bucket_batches=4)
    plan = sampler.plan(0)
    assert sorted(i for b in plan for i in b) == list(range(103))
    assert plan == BucketBatchSampler(lengths, 8, seed=3, bucket_batches=4).plan(0)  # pure in (seed, epoch)
    assert plan != sampler.plan(1)
    # Bucketing pays: far less padding than the same batch sizes cut from a random order.
    padded = sum(len(b) * max(lengths[i] for i in b) for b in plan)
    unsorted = BucketBatchSampler(lengths, 8, seed=3, bucket_batches=1, shuffle=True)
    random_padded = sum(len(b) * max(lengths[i] for i in b) for b in unsorted.plan(0))
    assert padded < random_padded


def test_bucket_sampler_token_cap_and_ranks():
    lengths = [10, 50, 20, 40, 30, 60, 5, 15, 25, 35]
    capped = BucketBatchSampler(lengths, 8, max_tokens=60, seed=0)
    assert all(len(b) * max(lengths[i] for i in b) <= 60 for b in capped.plan(0))
    ranks = [BucketBatchSampler(lengths, 2, seed=0, num_replicas=2, rank=r).plan(0) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}
    with pytest.raises(ValueError, match="max_tokens=30 is below the longest sequence"):
        BucketBatchSampler(lengths, 8, max_tokens=30)


def test_stream_resumes_exactly():
    sampler = BucketBatchSampler(list(range(1, 30)), 4, seed=1)
    full = [b for _, (_, _, b) in zip(range(20), sampler.stream())]
    epoch, pos, _ = list(zip(range(12), sampler.stream()))[-1][1]
    resumed = [b for _, (_, _, b) in zip(range(8), sampler.stream(epoch, pos + 1))]
    assert full[12:] == resumed


def test_aligned_text_marks_exactly_the_sentence_in_every_task(setup):
    corpus, cache, text = setup
    examples, _ = encode_split(
        corpus, "train", _cfg(corpus.root, speaker_aware=True), SequenceEncoder(text, _layout(cache, 3)), cache
    )
    rows = {r.id: r for r in corpus.tts()}
    for ex in examples:
        sentence = rows[ex.id.split("/")[0]].text.removesuffix(".")
        marked = ex.input_ids[ex.aligned_text]
        assert text.decode(marked.tolist()) == " " + sentence  # with the space before it (BPE-safe split)
        assert not (ex.aligned_text & ex.is_speech).any()
        first_text, first_speech = ex.aligned_text.nonzero()[0, 0], ex.is_speech.nonzero()[0, 0]
        assert (first_text < first_speech) == ex.id.endswith("/tts")  # TTS reads it; ASR transcribes after
    batch = collate(examples[:2], text_pad_id=text.pad_id, speech_pad_id=0)
    assert batch.aligned_text is not None and batch.aligned_text.sum() == sum(e.aligned_text.sum() for e in examples[:2])
