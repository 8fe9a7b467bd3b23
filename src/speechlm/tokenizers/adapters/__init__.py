"""Pretrained codecs loaded from local checkpoints."""
