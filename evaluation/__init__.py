"""Evaluation: the metrics of a model over a split, the official
Cityscapes evaluators (evaluation/official.py) and qualitative figures (evaluation/figures.py)."""

from evaluation.loop import NonFiniteOutputError, evaluate_model
from evaluation.metrics import MultiTaskMetrics

__all__ = ["MultiTaskMetrics", "NonFiniteOutputError", "evaluate_model"]
