"""ExcessMTL: He, Zhou, Zhang & Zhao, "Robust Multi-Task Learning with Excess Risks" (ICML 2024),
Eq. 6-9, by TorchJD (torchjd.aggregation.ExcessMTL).

Each task's excess risk is estimated from its gradient with a diagonal (AdaGrad) Hessian estimate,
    E_k = sum_j g_kj^2 / sqrt(sum_{s<=t} g_kj(s)^2 + 1e-7)          (Eq. 6-7),
divided by its value at the first step (scale processing, Sec. 3.2), and the task weights take an
exponentiated-gradient step towards the tasks with the largest excess risk:
    w <- w * exp(eta E) / sum_k w_k exp(eta E_k)                   (Eq. 9),   g = J^T w.
w starts uniform (1/K, TorchJD follows the paper; the authors' code and LibMTL start at 1 and do not
renormalise); with `warmup_steps` > 0 the weights stay uniform that many steps and the baseline is the
warm-up's mean excess risk (the paper's Appendix C.1). The accumulated squared gradients are a tasks x n
tensor (the size of J), kept in memory and saved with the run. No solver: non-finite weights are
counted as failures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from losses.registry import register
from losses.torchjd_state import SolverOptions, TorchJDStateMethod


@dataclass
class ExcessMTLOptions(SolverOptions):
    robust_step_size: float = 1e-2  # eta: the exponentiated-gradient step size (LibMTL's default; TorchJD's is 1)
    warmup_steps: int = 0  # steps of uniform weights collecting the baseline (0: the first step's, as LibMTL)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.robust_step_size) and self.robust_step_size > 0):
            raise ValueError(f"ExcessMTL robust_step_size must be finite and > 0, got {self.robust_step_size}")
        if self.warmup_steps < 0:
            raise ValueError(f"ExcessMTL warmup_steps must be >= 0, got {self.warmup_steps}")


@register("excess-mtl", order=160)
class ExcessMTL(TorchJDStateMethod):
    """Weights that follow each task's estimated excess risk."""

    Options = ExcessMTLOptions
    state_names = ("_weights", "_sq_grad_sum", "_initial_w", "_warmup_w_sum", "_n_steps")
    log_prefix = "excess_mtl"

    def __init__(self, tasks: dict[str, str], options: ExcessMTLOptions | None = None) -> None:
        from torchjd.aggregation import ExcessMTL as TorchJDExcessMTL  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        aggregator = TorchJDExcessMTL(self.options.robust_step_size, self.options.warmup_steps)
        self.use(aggregator, aggregator.weighting)
        self.jd_state["_n_steps"] = 0

    def state_key(self, J):
        return (J.shape[0], J.shape[1], J.dtype, J.device)

    def _inject(self, J) -> None:
        super()._inject(J)
        # A missing accumulator (first step) or a J of another size: TorchJD starts afresh, so must the count.
        if self.jd_weighting._state_key is None or self.jd_state["_sq_grad_sum"] is None or \
                tuple(self.jd_state["_sq_grad_sum"].shape) != tuple(J.shape):
            self.jd_weighting._state_key = None
