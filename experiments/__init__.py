"""Experiments as data: manifests -> plan -> runner -> run records -> aggregation -> report.

An experiment table is a YAML manifest in configs/experiments/ (rows with their config overrides,
seeds, the paper's row or point each compares to, the columns to show). `reproduce.py` plans every
(row, seed) on a preset, trains what has no run record yet (experiments/runner.py), keeps one
small JSON record per finished run in results/<preset>/runs/ (experiments/records.py), and turns
records into tables and plots (experiments/aggregate.py, experiments/report.py). A new ablation or
benchmark table is a new manifest; no code changes. A new kind of table (its columns, section and figure)
is one module in experiments/analyses/, registered with @register("kind") (docs/extending.md).
"""
