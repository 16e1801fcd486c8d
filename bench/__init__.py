"""Benchmarks and reference measurements (data loading speed, trivial-predictor losses)."""
