"""Writing model outputs: the atomic output directory, the safetensors shard writer, dtype maps.

Shared by every op that writes a checkpoint (merge, requantize; export and extraction later), so
the checks (overlap with sources, disk budget), the staging and swap, and the byte layout of the
shards exist once.
"""
