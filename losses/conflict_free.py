"""ConFIG: Liu et al., "ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks"
(ICLR 2025), by TorchJD (torchjd.aggregation.ConFIG).

g = (sum_k g_k^T u) u, u the unit vector along the pseudo-inverse of the normalised task gradients
applied to the all-ones vector: g has the same positive cosine with every task gradient.
"""

from __future__ import annotations

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register


@register("config", order=130)
class ConFIG(AggregatorMethod):
    """A conflict-free direction with equal cosine to every task gradient."""

    def __init__(self, tasks: dict[str, str], options: GradientOptions | None = None) -> None:
        from torchjd.aggregation import ConFIG as TorchJDConFIG  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.aggregator = TorchJDConFIG()
