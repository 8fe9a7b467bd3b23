"""Token layout: joint vocabulary, stream interleaving (FWI/CWI), MTP grouping. Pure tensor code."""
