"""PCGrad: Yu et al., "Gradient Surgery for Multi-Task Learning" (NeurIPS 2020), Algorithm 1, by TorchJD.

Each task gradient is projected onto the normal plane of every other task gradient it conflicts
with (negative inner product), the others taken in a random order; the projected gradients are
summed. The random order comes from torch's generator, which the training step seeds from
(seed, step), so every process and a resumed run draw the same order.
"""

from __future__ import annotations

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register


@register("pcgrad", order=20)
class PCGrad(AggregatorMethod):
    """g = sum_k g_k^PC (torchjd's PCGrad)."""

    def __init__(self, tasks: dict[str, str], options: GradientOptions | None = None) -> None:
        from torchjd.aggregation import PCGrad as TorchJDPCGrad  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.aggregator = TorchJDPCGrad()
