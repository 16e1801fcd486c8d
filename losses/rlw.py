"""Random Loss Weighting: Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning" (TMLR 2022), Algorithm 2, by TorchJD (torchjd.scalarization.Random).

total = sum_k w_k L_k with w = softmax(z), z ~ N(0, I) drawn anew every step. The draw comes from
torch's generator, which the training step seeds from (seed, step): every process and a resumed run
draw the same weights.
"""

from __future__ import annotations

from losses.base import NoOptions
from losses.registry import register
from losses.scalarizer import ScalarizerMethod


@register("rlw", order=40)
class RLW(ScalarizerMethod):
    """Random weights summing to 1, from a softmax of standard normal draws."""

    def __init__(self, tasks: dict[str, str], options: NoOptions | None = None) -> None:
        from torchjd.scalarization import Random  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.scalarizer = Random()
