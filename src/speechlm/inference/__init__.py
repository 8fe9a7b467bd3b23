"""Inference: logit processors and the KV-cached Generator (NTP/MTP)."""
