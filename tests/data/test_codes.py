"""Code cache: encode once, read back exactly, never reuse codes from another tokenizer or corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from slm_fakes import FrameTokenizer, make_mini_corpus

from speechlm.audio import load_audio
from speechlm.data.codes import (
    build_code_cache,
    ensure_code_cache,
    open_code_cache,
    speaker_means,
    tokenizer_fingerprint,
)
from speechlm.data.manifest import Corpus


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    return make_mini_corpus(tmp_path / "corpus")


def test_cache_round_trip_equals_direct_encoding(corpus, tmp_path):
    tok = FrameTokenizer()
    cache = build_code_cache(corpus, tok, tmp_path / "cache", show_progress=False)
    assert cache.split_ids["train"] == ("u0", "u1", "q0")
    reopened = open_code_cache(tmp_path / "cache", fingerprint=tokenizer_fingerprint(tok))
    for utt in [*corpus.tts(), *corpus.qa()]:
        wav = torch.from_numpy(load_audio(corpus.audio_path(utt)).wav)[None]
        direct = tok.encode(wav, torch.tensor([wav.shape[1]]))
        got = reopened.get(utt.id)
        assert torch.equal(got.codes, direct.codes[0]), utt.id  # batching with padding changed nothing
        assert torch.allclose(got.speaker, direct.speaker[0], atol=1e-6)
        assert got.num_frames == int(direct.lengths[0]) == int(np.ceil(utt.duration * 50))
    assert cache.codebook_sizes == (8, 16, 16) and cache.speaker_dim == 4


def test_fingerprint_tracks_weights_not_object_identity():
    assert tokenizer_fingerprint(FrameTokenizer(seed=0)) == tokenizer_fingerprint(FrameTokenizer(seed=0))
    assert tokenizer_fingerprint(FrameTokenizer(seed=0)) != tokenizer_fingerprint(FrameTokenizer(seed=1))


def test_another_tokenizer_never_reuses_a_cache(corpus, tmp_path):
    a, b = FrameTokenizer(seed=0), FrameTokenizer(seed=1)
    cache_a = ensure_code_cache(corpus, a, tmp_path / "caches", show_progress=False)
    cache_b = ensure_code_cache(corpus, b, tmp_path / "caches", show_progress=False)
    assert cache_a.root != cache_b.root
    with pytest.raises(ValueError, match="refusing stale codes"):
        open_code_cache(cache_a.root, fingerprint=tokenizer_fingerprint(b))


def test_ensure_reuses_a_valid_cache_and_rebuilds_after_the_corpus_changes(corpus, tmp_path):
    tok = FrameTokenizer()
    first = ensure_code_cache(corpus, tok, tmp_path / "caches", show_progress=False)
    stamp = (first.root / "train.safetensors").stat().st_mtime_ns
    again = ensure_code_cache(corpus, tok, tmp_path / "caches", show_progress=False)
    assert (again.root / "train.safetensors").stat().st_mtime_ns == stamp  # not re-encoded
    # Re-synthesised corpus: a row more in the manifest -> the cache is rebuilt and knows the new id.
    manifest = corpus.root / "tts.jsonl"
    row = json.loads(manifest.read_text().splitlines()[0]) | {"id": "u9"}
    manifest.write_text(manifest.read_text() + json.dumps(row) + "\n")
    rebuilt = ensure_code_cache(Corpus.open(corpus.root), tok, tmp_path / "caches", show_progress=False)
    assert "u9" in rebuilt and "u9" not in first


def test_missing_codes_are_a_clear_error(corpus, tmp_path):
    cache = build_code_cache(corpus, FrameTokenizer(), tmp_path / "cache", splits=("train",), show_progress=False)
    with pytest.raises(ValueError, match="'u2' has no cached codes"):
        cache.get("u2")  # a val row, not cached
    with pytest.raises(FileNotFoundError, match="not a code cache"):
        open_code_cache(tmp_path / "nowhere")


def test_speaker_means_average_a_speakers_utterances(corpus, tmp_path):
    cache = build_code_cache(corpus, FrameTokenizer(), tmp_path / "cache", show_progress=False)
    means = speaker_means(cache, corpus, "train")
    expected_a = torch.stack([cache.get("u1").speaker, cache.get("q0").speaker]).mean(0)
    assert torch.allclose(means["a"], expected_a) and torch.allclose(means["b"], cache.get("u0").speaker)
