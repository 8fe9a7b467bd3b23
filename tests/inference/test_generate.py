"""The Generator against independent references: full recomputation, teacher forcing, single items."""

from __future__ import annotations

import pytest
import torch

from conftest import bias_speech, char_tokenizer, tiny_layout, tiny_slm
from speechlm.inference.generate import GenerationConfig, GenerationOutput, Generator, PromptBatch, PromptItem
from speechlm.inference.sampling import SamplingConfig
from speechlm.model.batch import IGNORE_INDEX, SLMBatch

TEXT = char_tokenizer()
END, PAD = 24, 25


def tts_item(text: str, frames: int) -> PromptItem:
    return PromptItem(tuple(TEXT.encode(f"[Human]: Read this: {text} [Assistant]: [ua]")), max_frames=frames)


def qa_item(question: str, frames: int) -> PromptItem:
    return PromptItem(tuple(TEXT.encode(f"[Human]: {question} [Assistant]: [ta]")), max_frames=frames, text_first=True)


def run(model, layout, items, **cfg) -> GenerationOutput:
    gen = Generator(model, layout, TEXT, GenerationConfig(**cfg))
    return gen.generate(PromptBatch.from_items(items, TEXT.pad_id))


def assert_same(a: GenerationOutput, b: GenerationOutput) -> None:
    assert a.lengths.tolist() == b.lengths.tolist()
    assert torch.equal(a.codes, b.codes)
    assert a.finished.tolist() == b.finished.tolist()
    assert a.text == b.text


# END biases chosen so that the three items stop at different steps, some at END, some at the limit.
@pytest.mark.parametrize("g, order, end_bias", [(1, "fwi", 0.5), (3, "fwi", 1.0), (6, "fwi", 0.0), (1, "cwi", 0.0)])
def test_kv_cache_equals_full_recomputation(g, order, end_bias):
    layout = tiny_layout(g, order)
    model = tiny_slm(layout, TEXT.vocab_size, seed=1)
    bias_speech(model, END, end_bias)
    items = [tts_item("hi", 6), qa_item("who is it?", 5), tts_item("a longer sentence", 8)]
    cached = run(model, layout, items, max_text_tokens=4)
    recomputed = run(model, layout, items, max_text_tokens=4, kv_cache=False)
    assert_same(cached, recomputed)
    assert cached.lengths.max() > 0


def test_kv_cache_equals_full_recomputation_with_eager_attention():
    """Guided-attention models (``model.guided``) train and decode with eager attention."""
    layout = tiny_layout(12)
    model = tiny_slm(layout, TEXT.vocab_size, seed=2, attn="eager")
    bias_speech(model, END, 0.5)
    items = [tts_item("hi", 6), tts_item("a longer sentence", 9)]
    assert_same(run(model, layout, items), run(model, layout, items, kv_cache=False))
    sdpa = tiny_slm(layout, TEXT.vocab_size, seed=2)
    bias_speech(sdpa, END, 0.5)
    assert_same(run(model, layout, items), run(sdpa, layout, items))  # same weights: same greedy output


@pytest.mark.parametrize("g", [1, 3, 12])
def test_generation_is_the_argmax_of_teacher_forced_logits(g):
    """Feed prompt + generated groups through the *training* forward: each generated group must be
    the masked argmax of the logits at the position before it (same fusion, positions, heads)."""
    layout = tiny_layout(g)
    model = tiny_slm(layout, TEXT.vocab_size, seed=2)
    item = tts_item("teacher forcing", 8)
    gen = Generator(model, layout, TEXT, GenerationConfig(stop_at_end=False, sampling=SamplingConfig(repetition_penalty=1.0)))
    state = gen.prefill(PromptBatch.from_items([item], TEXT.pad_id))
    while not state.done:
        gen.step(state)
    groups = state.groups[0, : int(state.num_groups[0])]  # [J,G]
    J, P = groups.shape[0], len(item.ids)
    assert J == -(-8 * 3 // g)
    S = P + J
    speech_ids = torch.full((1, S, g), PAD)
    speech_ids[0, P:] = groups
    is_speech = torch.zeros(1, S, dtype=torch.bool)
    is_speech[0, P:] = True
    input_ids = torch.full((1, S), TEXT.pad_id)
    input_ids[0, :P] = torch.tensor(item.ids)
    batch = SLMBatch(
        input_ids=input_ids,
        speech_ids=speech_ids,
        is_speech=is_speech,
        attention_mask=torch.ones(1, S, dtype=torch.long),
        text_labels=torch.full((1, S), IGNORE_INDEX),
        speech_labels=torch.where(is_speech[..., None], speech_ids, IGNORE_INDEX),
        speaker_mask=torch.zeros(1, S, dtype=torch.bool),
    )
    with torch.no_grad():
        logits = model(batch).speech_logits[0, P - 1 : S - 1]  # [J,G,V]: position s predicts s+1
    allowed = layout.allowed_mask(torch.arange(J))
    allowed[..., END] = allowed[..., PAD] = False  # END disabled, PAD never generated
    expected = logits.masked_fill(~allowed, float("-inf")).argmax(-1)
    assert torch.equal(expected, groups)


def test_items_in_a_batch_decode_as_they_would_alone():
    layout = tiny_layout(3)
    model = tiny_slm(layout, TEXT.vocab_size, seed=3)
    bias_speech(model, END, -0.5)  # this seed: one item ends at END, the others at their limits
    head, bias = model.text_head, torch.zeros(TEXT.vocab_size)
    bias[[TEXT.special_id("[ua]"), TEXT.eos_id]] = -1e4  # QA answers run to the 3-token budget
    model.text_head = lambda h: head(h) + bias
    items = [tts_item("x", 9), qa_item("what is the time now?", 6), tts_item("short", 4), qa_item("hm?", 7)]
    batch = run(model, layout, items, max_text_tokens=3)
    for b, item in enumerate(items):
        alone = run(model, layout, [item], max_text_tokens=3)
        n = int(alone.lengths[0])
        assert int(batch.lengths[b]) == n
        assert torch.equal(batch.codes[b, :, :n], alone.codes[0, :, :n])
        assert bool(batch.finished[b]) == bool(alone.finished[0])
        assert batch.text[b] == alone.text[0]
    assert len(set(batch.lengths.tolist())) > 1, "items should stop at different steps"
    assert batch.finished.any() and not batch.finished.all()


def test_end_stops_an_item_and_truncates_its_group():
    layout = tiny_layout(6)  # two frames per group
    model = tiny_slm(layout, TEXT.vocab_size)
    bias_speech(model, END, 1e4, slots=(3,))  # END as the first token of every group's second frame
    out = run(model, layout, [tts_item("stop", 20)])
    assert out.finished.tolist() == [True]
    assert out.lengths.tolist() == [1] and out.steps == 1


def test_an_item_without_end_is_cut_at_its_frame_limit_and_marked_unfinished():
    layout = tiny_layout(3)
    model = tiny_slm(layout, TEXT.vocab_size)
    bias_speech(model, END, -1e4)
    out = run(model, layout, [tts_item("loop", 7), tts_item("loop", 2)])
    assert out.finished.tolist() == [False, False]
    assert out.lengths.tolist() == [7, 2]
    assert out.steps == 7
    assert ((out.codes >= 0) & (out.codes < 8)).all()


def test_text_phase_writes_the_answer_then_speaks():
    layout = tiny_layout(3)
    model = tiny_slm(layout, TEXT.vocab_size)
    bias_speech(model, END, -1e4)
    x, ua = TEXT.encode("x")[0], TEXT.special_id("[ua]")
    head = model.text_head
    bias = torch.zeros(TEXT.vocab_size)
    bias[x] = 1e4
    model.text_head = lambda h: head(h) + bias  # always "x": the budget must end the answer
    out = run(model, layout, [qa_item("q?", 2)], max_text_tokens=5)
    assert out.text == ["xxxxx"] and out.lengths.tolist() == [2]
    assert out.steps == 5 + 1 + 2  # five letters, the forced "[ua]", two frames
    bias[ua] = 2e4  # now "[ua]" right away: an empty answer, straight to speech
    out = run(model, layout, [qa_item("q?", 2)], max_text_tokens=5)
    assert out.text == [""] and out.steps == 1 + 2


def test_qa_speech_limit_follows_the_written_answer():
    layout = tiny_layout(3)
    model = tiny_slm(layout, TEXT.vocab_size)
    bias_speech(model, END, -1e4)
    x = TEXT.encode("x")[0]
    head = model.text_head
    bias = torch.zeros(TEXT.vocab_size)
    bias[x] = 1e4
    model.text_head = lambda h: head(h) + bias
    cfg = GenerationConfig(max_text_tokens=4, seconds_per_char=0.5, extra_seconds=0.0)
    gen = Generator(model, layout, TEXT, cfg, frame_rate=2.0)  # 4 chars * 0.5 s * 2 Hz = 4 frames
    out = gen.generate(PromptBatch.from_items([qa_item("q?", 50)], TEXT.pad_id))
    assert out.text == ["xxxx"] and out.lengths.tolist() == [4]


def test_speaker_vector_conditions_generation_and_batches_like_single_items():
    layout = tiny_layout(3)
    model = tiny_slm(layout, TEXT.vocab_size, seed=4, speaker_dim=4)
    ids = TEXT.encode("[Human]: speak like <|spk_emb|>. [Assistant]: [ua]")
    pos = ids.index(TEXT.special_id("<|spk_emb|>"))
    voices = torch.randn(2, 4, generator=torch.Generator().manual_seed(0)) * 3
    items = [PromptItem(tuple(ids), 10, speaker_position=pos, speaker=v) for v in voices]
    batch = run(model, layout, items)
    assert not torch.equal(batch.codes[0], batch.codes[1])
    alone = run(model, layout, [items[1]])
    n = int(alone.lengths[0])
    assert int(batch.lengths[1]) == n and torch.equal(batch.codes[1, :, :n], alone.codes[0])


def test_sampling_is_reproducible_with_a_seed_and_respects_stream_masks():
    layout = tiny_layout(3)
    model = tiny_slm(layout, TEXT.vocab_size)
    cfg = dict(sampling=SamplingConfig(do_sample=True, temperature=1.5), seed=7)
    a = run(model, layout, [tts_item("s", 10)], **cfg)
    b = run(model, layout, [tts_item("s", 10)], **cfg)
    assert_same(a, b)


def test_length_rule_and_bad_settings():
    cfg = GenerationConfig(seconds_per_char=0.1, extra_seconds=1.0)
    assert cfg.max_frames(20, 50.0) == 150  # ceil(50 * (0.1 * 20 + 1))
    assert cfg.max_frames(0, 50.0) == 50
    with pytest.raises(ValueError, match="seconds_per_char"):
        GenerationConfig(seconds_per_char=0.0, extra_seconds=0.0)
    with pytest.raises(ValueError, match="max_text_tokens"):
        GenerationConfig(max_text_tokens=-1)


def test_prompt_batch_left_pads_and_refuses_bad_prompts():
    batch = PromptBatch.from_items([PromptItem((5, 6, 7), 3), PromptItem((9,), 2)], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="empty"):
        PromptBatch.from_items([PromptItem((), 3)], pad_id=0)
    with pytest.raises(ValueError, match="max_frames"):
        PromptBatch.from_items([PromptItem((1,), 0)], pad_id=0)
    with pytest.raises(ValueError, match="every prompt"):
        PromptBatch.from_items([PromptItem((1,), 1, speaker_position=0, speaker=torch.zeros(2)), PromptItem((1,), 1)], 0)
    with pytest.raises(ValueError, match="no prompts"):
        PromptBatch.from_items([], pad_id=0)


def test_a_half_precision_model_takes_float32_speaker_vectors():
    layout = tiny_layout(3)
    model = tiny_slm(layout, TEXT.vocab_size, speaker_dim=4).to(torch.bfloat16)
    bias_speech(model, END, -1e4)
    ids = TEXT.encode("[Human]: like <|spk_emb|>. [Assistant]: [ua]")
    item = PromptItem(tuple(ids), 3, speaker_position=ids.index(TEXT.special_id("<|spk_emb|>")), speaker=torch.randn(4))
    out = run(model, layout, [item])
    assert out.lengths.tolist() == [3] and out.codes.dtype == torch.long
