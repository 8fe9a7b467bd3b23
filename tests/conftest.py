"""Shared fixtures for every area's tests.

``tiny_corpus`` builds the built-in corpus once per test session with the ``tiny`` preset
(~90 utterances: 12 speakers incl. 3 unseen, spoken QA with in/out-of-domain test items and the
grammar/LM files for the ASR judge) into a temporary folder; see ``speechlm.data.synth``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a corpus folder made by ``speechlm data synth --preset tiny`` (seed 0); treat as read-only."""
    from speechlm.data.synth import synthesize_corpus

    root = tmp_path_factory.mktemp("tiny_corpus")
    synthesize_corpus("tiny", root, seed=0)
    return root
