"""Benchmarks: adapt against its peers, side by side in the same run. `python -m benchmarks`."""
