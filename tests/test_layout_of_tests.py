"""Test files live in per-package folders without __init__.py (pytest's default import mode), so two
test files with the same basename would shadow each other at collection. Fail early and clearly."""

from collections import Counter
from pathlib import Path


def test_test_file_basenames_are_unique():
    names = Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    dupes = sorted(n for n, c in names.items() if c > 1)
    assert not dupes, f"test files share a basename (rename one): {dupes}"
