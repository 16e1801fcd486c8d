"""Scale-invariant loss: the sum of the logarithms of the task losses (as in LibMTL's benchmarks and
Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022, Sec. 6 baselines).

total = sum_k log L_k, so the update is sum_k grad L_k / L_k: multiplying a task's loss by a constant
changes nothing. Written here: TorchJD 0.18 has no such scalarisation (three lines).
"""

from __future__ import annotations

import torch
from torch import Tensor

from losses.base import NoOptions, StepContext, Weighting
from losses.registry import register
from losses.scalarizer import ScalarizerMethod


@register("scale-invariant", order=60)
class ScaleInvariant(ScalarizerMethod):
    """sum_k log L_k; every loss must be positive."""

    def __init__(self, tasks: dict[str, str], options: NoOptions | None = None) -> None:
        super().__init__(tasks, options)

    def weigh(self, losses: dict[str, Tensor], ctx: StepContext) -> Weighting:
        values = self.loss_vector(losses)
        return self.scalarized(torch.log(values).sum(), values)
