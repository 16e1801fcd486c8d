"""Geometric Loss Strategy: Chennupati et al., "MultiNet++" (CVPR Workshops 2019), by TorchJD
(torchjd.scalarization.GeometricMean).

total = (prod_k L_k)^(1/K). Its gradient is sum_k (total / (K L_k)) grad L_k: each task is weighted
by the inverse of its own loss, so the update does not depend on the tasks' loss scales.
"""

from __future__ import annotations

from losses.base import NoOptions
from losses.registry import register
from losses.scalarizer import ScalarizerMethod


@register("gls", order=50)
class GLS(ScalarizerMethod):
    """The geometric mean of the task losses."""

    def __init__(self, tasks: dict[str, str], options: NoOptions | None = None) -> None:
        from torchjd.scalarization import GeometricMean  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.scalarizer = GeometricMean()
