"""Random Gradient Weighting (RGW): Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus
Test for Multi-Task Learning" (TMLR 2022), Sec. 3 (the gradient-space counterpart of RLW), by TorchJD
(torchjd.aggregation.Random).

g = J^T w with w = softmax(z), z ~ N(0, I) drawn anew every step (LibMTL's RGW). The draw comes from
torch's generator, which the training step seeds from (seed, step): every process and a resumed run draw
the same weights.
"""

from __future__ import annotations

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register


@register("rgw", order=220)
class RGW(AggregatorMethod):
    """Random convex combinations of the task gradients."""

    def __init__(self, tasks: dict[str, str], options: GradientOptions | None = None) -> None:
        from torchjd.aggregation import Random  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.aggregator = Random()
