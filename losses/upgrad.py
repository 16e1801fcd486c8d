"""UPGrad: Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization" (2024), by TorchJD
(torchjd.aggregation.UPGrad; quadratic programs solved with quadprog).

Each task gradient is projected onto the dual cone of the rows of J (the set of vectors with a
non-negative inner product with every task gradient) and the projections are averaged: the update
never increases any task's loss to first order.
"""

from __future__ import annotations

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register


@register("upgrad", order=90)
class UPGrad(AggregatorMethod):
    """The mean of the task gradients projected onto the dual cone of J."""

    def __init__(self, tasks: dict[str, str], options: GradientOptions | None = None) -> None:
        from torchjd.aggregation import UPGrad as TorchJDUPGrad  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.aggregator = TorchJDUPGrad()
