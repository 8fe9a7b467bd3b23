import random

import pytest

from speechlm.data.facts import Arithmetic, Category, load_facts, number_words
from speechlm.data.grammar import Grammar, load_grammar, load_pronunciations, tokenize, write_dictionary


@pytest.fixture(scope="module")
def grammar() -> Grammar:
    return load_grammar()


def test_every_spoken_word_is_in_the_pocketsphinx_cmu_dictionary(grammar):
    answers = {w for f in load_facts().facts() for w in tokenize(f"The answer is {f.answer}.")}
    words = set(grammar.words()) | answers
    prons = load_pronunciations(words)
    assert sorted(words - set(prons)) == []


def test_vocabulary_is_a_few_hundred_word_types(grammar):
    assert 200 <= len(grammar.words()) <= 600


def test_samples_have_3_to_12_words_and_are_distinct(grammar):
    rng = random.Random(0)
    sents = grammar.sample_unique(rng, 400, exclude={"please open the door"})
    assert len(set(sents)) == 400 and "please open the door" not in sents
    assert all(3 <= len(s.split()) <= 12 for s in sents)
    assert all(w in set(grammar.words()) for s in sents for w in s.split())


def test_sampling_is_seeded(grammar):
    a = grammar.sample_unique(random.Random(5), 20)
    assert a == grammar.sample_unique(random.Random(5), 20)
    assert a != grammar.sample_unique(random.Random(6), 20)


def test_jsgf_export_accepts_grammar_sentences_and_rejects_scrambles(grammar, tmp_path):
    import pocketsphinx

    path = tmp_path / "g.jsgf"
    path.write_text(grammar.to_jsgf({"answer": ["the answer is paris"]}))
    jsgf = pocketsphinx.Jsgf(str(path))
    decoder = pocketsphinx.Decoder(loglevel="FATAL")
    fsg = jsgf.build_fsg(jsgf.get_rule("domain.utterance"), decoder.get_logmath(), 7.5)
    rng = random.Random(1)
    for words in (grammar.sample(rng) for _ in range(50)):
        assert fsg.accept(" ".join(words))
        assert not fsg.accept(" ".join(reversed(words))) or words == words[::-1]
    assert fsg.accept("the answer is paris") and not fsg.accept("the answer is berlin")


def test_bad_grammars_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="undefined rule <NOUN>"):
        Grammar("S", {"S": (("the", "<NOUN>"),)})
    with pytest.raises(ValueError, match="'Dog' is not a lowercase word"):
        Grammar("S", {"S": (("the", "Dog"),)})
    with pytest.raises(ValueError, match="start rule <X>"):
        Grammar("X", {"S": (("a",),)})
    path = tmp_path / "g.yaml"
    path.write_text("start: S\nrules:\n  S: [on, off]\n")  # YAML 1.1 booleans
    with pytest.raises(ValueError, match="g.yaml: rule <S> has non-string alternative"):
        load_grammar(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_grammar(tmp_path / "missing.yaml")


def test_too_many_unique_sentences_is_an_error():
    tiny = Grammar("S", {"S": (("a", "b", "c"), ("a", "c", "b"))})
    with pytest.raises(ValueError, match="only 2 distinct sentences"):
        tiny.sample_unique(random.Random(0), 3)


def test_dictionary_export(tmp_path):
    path = write_dictionary(["read", "dog"], tmp_path / "d.dic")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("dog ") and any(l.startswith("read(2) ") for l in lines)
    with pytest.raises(ValueError, match="not in the CMU dictionary: \\['qzxv'\\]"):
        write_dictionary(["dog", "qzxv"], tmp_path / "e.dic")


def test_number_words_and_arithmetic_facts():
    assert [number_words(n) for n in (0, 13, 40, 42, 100)] == ["zero", "thirteen", "forty", "forty two", "one hundred"]
    with pytest.raises(ValueError, match="0..100"):
        number_words(101)
    minus = Arithmetic("minus", 5).facts()
    assert minus["five minus two"] == "three" and "two minus five" not in minus
    assert Arithmetic("times", 10).facts()["seven times eight"] == "fifty six"


def test_fact_table_has_in_and_out_of_domain_categories():
    table = load_facts()
    domains = {c.domain for c in table.categories.values()}
    assert domains == {"in", "out"}
    assert len(table.categories) >= 6
    fact = table.facts("out")[0]
    item = table.ask(fact, random.Random(0))
    assert fact.subject in item.question and item.text == f"The answer is {fact.answer}."


def test_bad_category_is_an_error():
    with pytest.raises(ValueError, match="exactly one of 'facts' and 'arithmetic'"):
        Category("in", ("What is {subject}?",))
    with pytest.raises(ValueError, match="must contain \\{subject\\}"):
        Category("in", ("What is it?",), facts={"a": "b"})
