import pytest
import torch

from speechlm.layout.vocab import SPEAKER_PLACEHOLDER, SPEECH_BEGIN, TEXT_ANSWER_BEGIN, TEXT_SPECIALS, SpeechVocab


def test_ids_are_laid_end_to_end_with_end_and_pad_last():
    v = SpeechVocab((1024, 1024, 1024), ("prosody", "content0", "content1"))
    assert v.offsets == (0, 1024, 2048)
    assert (v.end_id, v.pad_id, v.size) == (3072, 3073, 3074)
    assert v.stream_slice(1) == slice(1024, 2048)


def test_stream_slices_partition_the_speech_ids():
    v = SpeechVocab((3, 5, 2), ("a", "b", "c"))
    masks = v.stream_masks()
    assert masks.shape == (3, v.size)
    assert torch.equal(masks.sum(0)[: v.end_id], torch.ones(v.end_id, dtype=torch.long))  # each id in one stream
    assert not masks[:, v.end_id :].any()  # END/PAD belong to no stream


def test_stream_of_inverts_to_global():
    v = SpeechVocab((3, 5, 2), ("a", "b", "c"))
    sizes = torch.tensor(v.codebook_sizes)[:, None]
    codes = (torch.rand(3, 40) * sizes).long()  # [K, T] in range
    ids = v.to_global(codes)
    assert torch.equal(v.stream_of(ids), torch.arange(3)[:, None].expand(3, 40))
    assert torch.equal(v.to_local(ids), codes)
    specials = torch.tensor([v.end_id, v.pad_id, -1, v.size])
    assert v.stream_of(specials).tolist() == [-1, -1, -1, -1]


@pytest.mark.parametrize(
    ("sizes", "names", "match"),
    [
        ((), (), "at least one stream"),
        ((4, 4), ("a",), "2 codebook sizes"),
        ((4, 0), ("a", "b"), "'b': codebook size"),
        ((4, 4), ("a", "a"), "unique"),
    ],
)
def test_bad_vocab_is_rejected(sizes, names, match):
    with pytest.raises(ValueError, match=match):
        SpeechVocab(sizes, names)


def test_stream_slice_out_of_range_names_the_streams():
    with pytest.raises(ValueError, match="stream index 2 out of range"):
        SpeechVocab((4, 4), ("a", "b")).stream_slice(2)


def test_text_specials_are_distinct_and_include_the_prompt_markers():
    assert len(set(TEXT_SPECIALS)) == len(TEXT_SPECIALS)
    assert {SPEECH_BEGIN, TEXT_ANSWER_BEGIN, SPEAKER_PLACEHOLDER} <= set(TEXT_SPECIALS)
