"""Text tokenizers: characters for tiny models, Hugging Face tokenizers for real backbones."""
