"""MoDo: Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective Learning: Optimization,
Generalization and Conflict-Avoidance" (NeurIPS 2023; JMLR 2024), Eq. 2.9a-b (Algorithm 1), by TorchJD
(torchjd.aggregation.MoDoWeighting).

    lambda <- Proj_simplex( lambda - gamma (J_1 J_2^T lambda + rho lambda) ),     g = J^T lambda,
lambda starting uniform and carried across steps (saved with the run).

Double sampling: MoDo needs J_1, J_2 from two independent mini-batches (their product is an unbiased
estimate of G = J J^T). This codebase's step computes one J per step, on one batch, so J_1 is the
previous step's J (an independent batch, taken one optimiser step earlier) and J_2 this step's; the
update combines this step's J (the authors' code and LibMTL draw a third batch for it). At the first
step, or with `sampling: same`, J_1 = J_2 = J (no double sampling). `sampling: previous` needs the
Jacobian of the shared parameters (`space: parameters`), and keeps one extra J in memory and in the
checkpoint. gamma defaults to LibMTL's 1e-3 (TorchJD's 0.1 is for normalised toy problems; MoDo does not
normalise G). The projected step has no solver to fail; non-finite weights are counted as failures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from losses.registry import register
from losses.torchjd_state import DoubleSampledMethod, DoubleSamplingOptions


@dataclass
class MoDoOptions(DoubleSamplingOptions):
    gamma: float = 1e-3  # step size of lambda (LibMTL's default)
    rho: float = 0.1  # l2 regularisation of lambda's update

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"MoDo gamma must be finite and > 0, got {self.gamma}")
        if not (math.isfinite(self.rho) and self.rho >= 0):
            raise ValueError(f"MoDo rho must be finite and >= 0, got {self.rho}")


@register("modo", order=200)
class MoDo(DoubleSampledMethod):
    """Projected gradient descent on the simplex weights with a double-sampled Gramian."""

    Options = MoDoOptions
    state_names = ("_lambda",)
    log_prefix = "modo"

    def __init__(self, tasks: dict[str, str], options: MoDoOptions | None = None) -> None:
        from torchjd.aggregation import MoDoWeighting, WeightedAggregator  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        weighting = MoDoWeighting(gamma=self.options.gamma, rho=self.options.rho)
        self.use(WeightedAggregator(weighting), weighting)

    def state_key(self, J):
        return (J.shape[0], J.dtype, J.device)
