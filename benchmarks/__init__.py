"""Benchmarks: each figure beside a floor measured in the same run (see bench.py)."""
