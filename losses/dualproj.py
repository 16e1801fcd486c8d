"""DualProj: the mean gradient projected onto the dual cone of the task gradients (Quinton & Rey,
"Jacobian Descent for Multi-Objective Optimization", 2024, after GEM's projection), by TorchJD
(torchjd.aggregation.DualProj; quadprog).
"""

from __future__ import annotations

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register


@register("dualproj", order=120)
class DualProj(AggregatorMethod):
    """The projection of the mean of the task gradients onto the dual cone of J."""

    def __init__(self, tasks: dict[str, str], options: GradientOptions | None = None) -> None:
        from torchjd.aggregation import DualProj as TorchJDDualProj  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.aggregator = TorchJDDualProj()
