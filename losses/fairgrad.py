"""FairGrad: Ban & Ji, "Fair Resource Allocation in Multi-Task Learning" (ICML 2024), Eq. 4 / Algorithm 1,
by TorchJD (torchjd.aggregation.FairGrad; the non-linear system solved with scipy's least_squares, as in
the authors' code and LibMTL).

g = J^T w with w > 0 the solution of the alpha-fair resource allocation's optimality condition
    G w = w^(-1/alpha),    G = J J^T,
so every task's first-order improvement <g_k, g> equals its own utility's marginal 1 / w_k^(1/alpha).
alpha = 0 is the plain mean (linear scalarisation), alpha = 1 proportional fairness, alpha -> inf the
max-min fair (MGDA-like) allocation. For orthogonal gradients of norms a_k: w_k = a_k^(-2 alpha / (1 + alpha)).

Solver failures: least_squares returns its best iterate even when it did not converge. Here a solve
is a failure when its weights are not finite or its relative residual
|| G w - w^(-1/alpha) || / || w^(-1/alpha) || exceeds `residual_tol`; the failure is counted
(`fairgrad/solver_failures`, saved with the run) and the step uses the last good weights (uniform at
the first step), or, with `on_solver_failure: error`, stops the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from losses.registry import register
from losses.torchjd_state import SolverOptions, TorchJDStateMethod


@dataclass
class FairGradOptions(SolverOptions):
    alpha: float = 1.0  # the fairness exponent (LibMTL's default; the paper sweeps 0.5-10)
    max_iters: int | None = None  # least_squares' max_nfev; None: scipy's default (100 x tasks)
    residual_tol: float = 1e-2  # relative residual above which a solve counts as failed

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"FairGrad alpha must be finite and >= 0, got {self.alpha}")
        if self.max_iters is not None and self.max_iters < 1:
            raise ValueError(f"FairGrad max_iters must be >= 1 or None, got {self.max_iters}")
        if not (math.isfinite(self.residual_tol) and self.residual_tol > 0):
            raise ValueError(f"FairGrad residual_tol must be finite and > 0, got {self.residual_tol}")


def fairgrad_residual(w: Tensor, G: Tensor, alpha: float) -> float:
    """|| G w - w^(-1/alpha) || / || w^(-1/alpha) || (0 for alpha = 0, where w is uniform by definition)."""
    if alpha == 0:
        return 0.0
    w, G = w.double(), G.double()
    target = w.clamp_min(1e-300) ** (-1.0 / alpha)
    return float(torch.linalg.vector_norm(G @ w - target) / torch.linalg.vector_norm(target))


@register("fairgrad", order=140)
class FairGrad(TorchJDStateMethod):
    """The alpha-fair allocation of the first-order improvements among the tasks."""

    Options = FairGradOptions
    log_prefix = "fairgrad"

    def __init__(self, tasks: dict[str, str], options: FairGradOptions | None = None) -> None:
        from torchjd.aggregation import FairGrad as TorchJDFairGrad  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        aggregator = TorchJDFairGrad(alpha=self.options.alpha, max_iters=self.options.max_iters)
        self.use(aggregator, aggregator.gramian_weighting)

    def check_weights(self, w: Tensor, J: Tensor) -> str | None:
        if not bool(torch.isfinite(w).all()):
            return "non-finite weights"
        residual = fairgrad_residual(w, J @ J.T, self.options.alpha)
        if not residual <= self.options.residual_tol:
            return f"relative residual {residual:.3g} > {self.options.residual_tol}"
        return None
