"""MGDA: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization" (NeurIPS 2018), by
TorchJD (torchjd.aggregation.MGDA), and its upper-bound variant MGDA-UB.

g = J^T w, w = argmin_{w in simplex} || J^T w ||^2: the minimum-norm point of the convex hull of the task
gradients, found with the Frank-Wolfe iterations of the paper (`epsilon`, `max_iters`). MGDA-UB is
the same aggregation with J taken with respect to the shared features instead of the shared
parameters (the paper's Sec. 3.3): `mgda-ub` is `mgda` with `space: features` by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register


@dataclass
class MGDAOptions(GradientOptions):
    epsilon: float = 1e-3  # Frank-Wolfe stops when the weights change less than this
    max_iters: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.epsilon) and self.epsilon > 0) or self.max_iters < 1:
            raise ValueError(f"MGDA needs epsilon > 0 and max_iters >= 1, got {self.epsilon}, {self.max_iters}")


@dataclass
class MGDAUBOptions(MGDAOptions):
    space: str = "features"


@register("mgda", order=30)
class MGDA(AggregatorMethod):
    """The minimum-norm convex combination of the task gradients."""

    Options = MGDAOptions

    def __init__(self, tasks: dict[str, str], options: MGDAOptions | None = None) -> None:
        from torchjd.aggregation import MGDA as TorchJDMGDA  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.aggregator = TorchJDMGDA(epsilon=self.options.epsilon, max_iters=self.options.max_iters)


@register("mgda-ub", order=40)
class MGDAUB(MGDA):
    """MGDA on the Jacobian with respect to the shared features (MGDA-UB)."""

    Options = MGDAUBOptions
