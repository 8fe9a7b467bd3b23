import pytest

from speechlm.layout.vocab import TEXT_SPECIALS
from speechlm.text.base import TextTokenizer, TextTokenizerConfig, build_text_tokenizer, load_text_tokenizer
from speechlm.text.char import CharTokenizer


def test_round_trip_and_specials_are_single_ids():
    tok = CharTokenizer.from_texts(["hello world", "what is the capital?"], specials=TEXT_SPECIALS)
    assert isinstance(tok, TextTokenizer)
    text = "[Human]: hello [ta]the capital[ua]"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids[0] == tok.special_id("[Human]:") and ids.count(tok.special_id("[ua]")) == 1
    assert len(ids) == len(text) - len("[Human]:") - len("[ta]") - len("[ua]") + 3
    assert tok.decode(ids, skip_specials=True) == " hello the capital"


def test_alphabet_characters_inside_specials_still_encode_alone():
    tok = CharTokenizer.from_charset("[]ua ", specials=["[ua]"])
    assert tok.encode("[u]") == [tok.encode("[")[0], tok.encode("u")[0], tok.encode("]")[0]]
    assert tok.encode("[ua]") == [tok.special_id("[ua]")]


def test_unknown_character_error_names_it():
    tok = CharTokenizer.from_charset("abc ")
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9\)"):
        tok.encode("abé")


def test_unknown_special_error_lists_known():
    tok = CharTokenizer.from_charset("ab", specials=["[ua]"])
    with pytest.raises(ValueError, match=r"no special token '\[ta\]'.*'\[ua\]'"):
        tok.special_id("[ta]")


def test_add_specials_is_idempotent_and_appends():
    tok = CharTokenizer.from_charset("ab")
    first = tok.add_specials(["[ua]", "[ta]"])
    assert first == [tok.vocab_size - 2, tok.vocab_size - 1]
    assert tok.add_specials(["[ta]", "[ua]"]) == first[::-1]
    with pytest.raises(ValueError, match="clashes"):
        tok.add_specials(["a"])


def test_save_load_round_trip(tmp_path):
    tok = build_text_tokenizer(TextTokenizerConfig(kind="char"), texts=["Paris is in France."])
    tok.save(tmp_path)
    again = load_text_tokenizer(tmp_path)
    text = "[Assistant]: [ta]Paris[ua]"
    assert again.encode(text) == tok.encode(text) and again.vocab_size == tok.vocab_size
    assert (again.pad_id, again.eos_id) == (tok.pad_id, tok.eos_id) and tok.pad_id != tok.eos_id


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="charset"):
        build_text_tokenizer(TextTokenizerConfig(kind="char"))
    with pytest.raises(ValueError, match="path"):
        TextTokenizerConfig(kind="hf_dir")
    with pytest.raises(FileNotFoundError, match="missing text_tokenizer.json"):
        load_text_tokenizer(tmp_path)
