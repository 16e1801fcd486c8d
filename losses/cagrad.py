"""CAGrad: Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning" (NeurIPS 2021), by
TorchJD (torchjd.aggregation.CAGrad; the dual problem solved with cvxpy's Clarabel solver).

g maximises the worst task's improvement within a ball of radius c ||g0|| around the mean gradient g0;
c = 0 is the mean, larger c moves towards MGDA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register


@dataclass
class CAGradOptions(GradientOptions):
    c: float = 0.4  # the ball's radius relative to ||g0|| (the paper's 0.4 for Cityscapes / NYUv2)
    norm_eps: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.c) and self.c >= 0):
            raise ValueError(f"CAGrad c must be finite and >= 0, got {self.c}")


@register("cagrad", order=50)
class CAGrad(AggregatorMethod):
    """The conflict-averse update around the mean gradient."""

    Options = CAGradOptions

    def __init__(self, tasks: dict[str, str], options: CAGradOptions | None = None) -> None:
        from torchjd.aggregation import CAGrad as TorchJDCAGrad  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.aggregator = TorchJDCAGrad(c=self.options.c, norm_eps=self.options.norm_eps)
