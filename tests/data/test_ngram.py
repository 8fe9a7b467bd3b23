import math
import random

import pytest

from speechlm.data.ngram import BOS, EOS, build_arpa, estimate, read_arpa, write_arpa

CORPUS = [s.split() for s in ["a b", "a c", "a b c", "b c a", "c c b a"]]


def histories(model):
    """Every history the model lists, plus unseen ones (pure back-off paths)."""
    hs = {g[:-1] for g in model.probs if len(g) > 1} | {()}
    return sorted(hs) + [("zzz",), ("a", "zzz"), ("zzz", "b")]


@pytest.mark.parametrize("smoothing", ["absolute", "witten_bell"])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_written_arpa_normalises_for_every_history(tmp_path, smoothing, order):
    rng = random.Random(0)
    sents = [[rng.choice("abcde") for _ in range(rng.randint(1, 6))] for _ in range(60)]
    model = estimate(sents, order=order, smoothing=smoothing, vocab=["zzz"])
    back = read_arpa(write_arpa(model, tmp_path / "x.lm"))
    assert back.order == order
    vocab = [w for w in back.vocab if w != BOS]
    assert "zzz" in vocab and EOS in vocab
    for h in histories(back):
        total = sum(back.prob(w, h) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-5), (h, total)


def test_absolute_discounting_matches_hand_computation():
    # Interpolated absolute discounting, D = 0.5, bigram, corpus "a b" / "a c":
    # unigram counts a 2, b 1, c 1, </s> 2 (N = 6, 4 types, |V| = 4):
    #   P(b) = (1 - .5)/6 + (.5 * 4/6) / 4 = 1/6
    #   P(b|a) = (1 - .5)/2 + (.5 * 2/2) * P(b) = 1/4 + 1/12 = 1/3
    model = estimate([["a", "b"], ["a", "c"]], order=2, discount=0.5)
    assert model.prob("b") == pytest.approx(1 / 6)
    assert model.prob("b", ["a"]) == pytest.approx(1 / 3)
    # unseen "a a": back-off weight gamma(a) = 0.5 times P(a) = (2 - .5)/6 + 1/12 = 1/3
    assert model.prob("a", ["a"]) == pytest.approx(0.5 / 3)
    assert model.prob(BOS) == 0.0


def test_witten_bell_matches_hand_computation():
    # P(b) = 1/(6+4) + 4/10/4 = 0.2 ; P(b|a) = 1/(2+2) + 2/4 * 0.2 = 0.35
    model = estimate([["a", "b"], ["a", "c"]], order=2, smoothing="witten_bell")
    assert model.prob("b", ["a"]) == pytest.approx(0.35)


def test_larger_discount_moves_mass_to_unseen_events():
    tight = estimate(CORPUS, order=3, discount=0.1)
    loose = estimate(CORPUS, order=3, discount=0.9)
    seen, unseen = ("a", "b"), ("b", "b")  # "a b" seen; "b b" never
    assert tight.prob(seen[1], [seen[0]]) > loose.prob(seen[1], [seen[0]])
    assert tight.prob(unseen[1], [unseen[0]]) < loose.prob(unseen[1], [unseen[0]])


def test_sentence_logprob_is_chain_rule():
    model = estimate(CORPUS, order=2)
    expected = sum(math.log(model.prob(w, [h])) for h, w in [(BOS, "a"), ("a", "b"), ("b", EOS)])
    assert model.sentence_logprob(["a", "b"]) == pytest.approx(expected)


def test_pocketsphinx_reads_the_arpa(tmp_path):
    import pocketsphinx

    build_arpa(CORPUS, tmp_path / "x.lm", order=3)
    (tmp_path / "x.dic").write_text("a AH\nb B IY\nc S IY\n")
    pocketsphinx.Decoder(lm=str(tmp_path / "x.lm"), dict=str(tmp_path / "x.dic"), loglevel="FATAL")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [({"order": 0}, "order must be >= 1"), ({"discount": 1.5}, r"discount must be in \(0, 1\]"),
     ({"smoothing": "kneser"}, "unknown smoothing")],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        estimate(CORPUS, **kwargs)


def test_empty_and_unknown(tmp_path):
    with pytest.raises(ValueError, match="no sentences"):
        estimate([])
    with pytest.raises(ValueError, match="'q' is not in the LM vocabulary"):
        estimate(CORPUS).prob("q")
    bad = tmp_path / "bad.lm"
    bad.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0 a b c d\n\\end\\\n")
    with pytest.raises(ValueError, match="bad.lm:5: malformed ARPA line"):
        read_arpa(bad)
