"""GradDrop: Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign
Dropout" (NeurIPS 2020), by TorchJD (torchjd.aggregation.GradDrop).

Per coordinate, a positive-sign purity P = (1 + sum_k g_k / sum_k |g_k|) / 2 decides with one uniform
draw which sign survives; task gradients of the other sign are dropped there, the rest summed. The
draws come from torch's generator, seeded by the training step from (seed, step).

With `space: parameters` the coordinates are the shared parameters; the paper applies GradDrop to the
shared activations, i.e. `space: features`.
"""

from __future__ import annotations

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register


@register("graddrop", order=100)
class GradDrop(AggregatorMethod):
    """Gradient sign dropout."""

    def __init__(self, tasks: dict[str, str], options: GradientOptions | None = None) -> None:
        from torchjd.aggregation import GradDrop as TorchJDGradDrop  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.aggregator = TorchJDGradDrop()
