"""Stored runs: the JSON artifact, baselines, history, merging shards."""
