"""The SLM: backbone wrapper, speech embeddings and fusion, heads, speaker projector, losses."""
