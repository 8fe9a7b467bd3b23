"""speechlm: LLM-centric speech-language models with pluggable speech tokenizers."""

__version__ = "0.1.0"
