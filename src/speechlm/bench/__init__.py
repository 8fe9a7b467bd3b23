"""Speed benchmarks: decode, train, codec."""
