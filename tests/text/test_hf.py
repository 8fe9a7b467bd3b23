import pytest

from speechlm.layout.vocab import TEXT_SPECIALS
from speechlm.text.base import TextTokenizer, load_text_tokenizer
from speechlm.text.hf import HFTextTokenizer


@pytest.fixture(scope="module")
def qwen() -> HFTextTokenizer:
    tok = HFTextTokenizer.qwen25()  # ~7 s: rebuilds the BPE merges from the tiktoken ranks
    tok.add_specials(TEXT_SPECIALS)
    return tok


def test_qwen25_ids_match_the_official_tokenizer(qwen):
    assert isinstance(qwen, TextTokenizer)
    assert qwen.encode("Hello world!") == [9707, 1879, 0]
    # Qwen2.5's own added tokens sit at their published ids, named specials after them.
    assert qwen.special_id("<|endoftext|>") == 151643 == qwen.eos_id
    assert qwen.special_id("<|im_end|>") == 151645
    assert qwen.special_id("<|file_sep|>") == 151664
    assert [qwen.special_id(s) for s in TEXT_SPECIALS] == list(range(151665, 151665 + len(TEXT_SPECIALS)))
    assert qwen.vocab_size == 151665 + len(TEXT_SPECIALS)


def test_qwen25_specials_are_whole_and_round_trip(qwen):
    text = "[Human]: What is the capital of France?[Assistant]: [ta]Paris.[ua]"
    ids = qwen.encode(text)
    for name in ("[Human]:", "[Assistant]:", "[ta]", "[ua]"):
        assert ids.count(qwen.special_id(name)) == 1
    assert qwen.decode(ids) == text
    assert qwen.decode(ids, skip_specials=True) == " What is the capital of France? Paris."
    assert qwen.encode("naïve 你好") and qwen.decode(qwen.encode("naïve 你好")) == "naïve 你好"


def test_qwen25_save_load(qwen, tmp_path):
    qwen.save(tmp_path)
    again = load_text_tokenizer(tmp_path)
    assert again.vocab_size == qwen.vocab_size
    assert again.encode("[ua]Hello world!") == [qwen.special_id("[ua]"), 9707, 1879, 0]
    assert again.special_id("<|spk_emb|>") == qwen.special_id("<|spk_emb|>")


def test_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer folder not found"):
        HFTextTokenizer.from_dir(tmp_path / "nope")


@pytest.mark.slow
def test_smollm2_tokenizer_from_gguf():
    tok = HFTextTokenizer.smollm2()  # ~11 s: reads the GGUF's vocabulary
    assert tok.vocab_size == 49152
    assert tok.encode("Hello world!") == [19556, 905, 17]
    assert tok.eos_id == tok.special_id("<|im_end|>")
    ids = tok.add_specials(TEXT_SPECIALS)
    assert ids == list(range(49152, 49152 + len(TEXT_SPECIALS)))
    assert tok.encode("[ua]")[0] == ids[0]


def test_qwen25_tokenises_the_split_sentence_field_as_the_whole_prompt(qwen):
    """The formatter cuts the {text} field into its own piece (guided attention marks it); with the space before
    it moved into the piece, Qwen's pre-tokenizer gives the same ids as for the merged prompt."""
    from speechlm.data.manifest import Utterance
    from speechlm.data.tasks import TaskConfig, TaskFormatter, TextPiece

    row = Utterance(id="u", audio="a.wav", text="Please fix their book, then sing.", speaker="k", duration=1, split="train")
    for task in ("tts", "asr"):
        pieces = [p for p in TaskFormatter(TaskConfig()).format(row, task).pieces if isinstance(p, TextPiece)]
        assert sum(p.aligned for p in pieces) == 1
        split = [i for p in pieces for i in qwen.encode(p.text)]
        assert split == qwen.encode("".join(p.text for p in pieces))
