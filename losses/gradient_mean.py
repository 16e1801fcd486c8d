"""Jacobian descent with the mean of the task gradients (torchjd.aggregation.Mean).

g = (1/K) sum_k grad L_k: the same update as fixed weights of 1/K, reached through the
gradient-space path. It is the reference that checks that path (head gradients, scaler, DDP).
"""

from __future__ import annotations

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register


@register("gradient-mean", order=10)
class GradientMean(AggregatorMethod):
    """g = mean of the rows of J."""

    def __init__(self, tasks: dict[str, str], options: GradientOptions | None = None) -> None:
        from torchjd.aggregation import Mean  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.aggregator = Mean()
