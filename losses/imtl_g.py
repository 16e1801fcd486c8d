"""IMTL-G, the gradient-balancing half of Impartial Multi-Task Learning: Liu et al., "Towards Impartial
Multi-task Learning" (ICLR 2021), Sec. 3.2, by TorchJD (torchjd.aggregation.IMTLG).

g = J^T w with the weights (summing to 1) that make g's projections onto every task's unit gradient
equal. The loss-balancing half is `imtl-l`.
"""

from __future__ import annotations

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register


@register("imtl-g", order=60)
class IMTLG(AggregatorMethod):
    """Equal projections of the update onto every task's gradient direction."""

    def __init__(self, tasks: dict[str, str], options: GradientOptions | None = None) -> None:
        from torchjd.aggregation import IMTLG as TorchJDIMTLG  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.aggregator = TorchJDIMTLG()
