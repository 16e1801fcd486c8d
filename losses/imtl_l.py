"""IMTL-L, the loss-balancing half of Impartial Multi-Task Learning: Liu et al., "Towards Impartial
Multi-task Learning" (ICLR 2021), Sec. 3.1, by TorchJD (torchjd.scalarization.IMTLL).

total = sum_k (exp(s_k) L_k - s_k), one learned scale s_k per task (initially 0), trained by the run's
optimiser with `method.lr_mult` like uncertainty weighting's log-variances; at the optimum of s_k the
scaled loss exp(s_k) L_k is 1 for every task. The gradient-balancing half is `imtl-g`.
"""

from __future__ import annotations

from losses.base import NoOptions
from losses.registry import register
from losses.scalarizer import ScalarizerMethod


@register("imtl-l", order=70)
class IMTLL(ScalarizerMethod):
    """Learned loss scales exp(s_k) with the regulariser -s_k."""

    def __init__(self, tasks: dict[str, str], options: NoOptions | None = None) -> None:
        from torchjd.scalarization import IMTLL as TorchJDIMTLL  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.scalarizer = TorchJDIMTLL(len(self.tasks))
