"""Model operations on real tensors: deltas, merge, compose, quantize."""
