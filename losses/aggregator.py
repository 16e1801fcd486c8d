"""Gradient-space methods backed by a TorchJD aggregator (torchjd.aggregation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from losses.base import GradientMethod, StepContext

if TYPE_CHECKING:
    from torchjd.aggregation import Aggregator


class AggregatorMethod(GradientMethod):
    """`aggregate(J)` is exactly `self.aggregator(J)`; subclasses build the aggregator in `__init__`.

    For a weighted aggregator (g = w @ J) the weights are computed here with the aggregator's own
    `weighting`, the same arithmetic as its forward, and set as `applied_weights` (logged as
    `weight/<task>`); an aggregator that is no weighted sum of the rows (GradDrop) sets none.
    """

    aggregator: Aggregator

    def aggregate(self, J: Tensor, ctx: StepContext) -> Tensor:
        from torchjd.aggregation import WeightedAggregator  # lazy: torchjd loads cvxpy
        if J.dim() != 2 or J.shape[0] != len(self.tasks):
            raise ValueError(f"J must be (tasks={len(self.tasks)}, n), got {tuple(J.shape)}")
        if isinstance(self.aggregator, WeightedAggregator):
            w = self.aggregator.weighting(J)
            self.applied_weights = w.detach()
            return w @ J
        return self.aggregator(J)
