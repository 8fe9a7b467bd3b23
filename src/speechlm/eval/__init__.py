"""Evaluation: judges, metrics, alignment analysis, reports, the study runner."""
