"""Corpora: manifests, built-in synthetic corpus, datasets, reference-format import/export."""
