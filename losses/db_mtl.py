"""DB-MTL: Lin et al., "Dual-Balancing for Multi-Task Learning" (arXiv 2308.12029, 2023; LibMTL's DB_MTL),
its loss-scale balancing (log losses) and gradient-magnitude balancing (an EMA of the gradients scaled to
the largest norm). Written here: TorchJD 0.18 has no DB-MTL.

Equation numbers are those of the arXiv paper's later (nine-author) version. Loss-scale balancing (its
Section 3.1, Algorithm 1 step 6): each task's gradient is taken of log L_k, i.e. g_k / L_k (here from J and the
process-averaged losses `ctx.losses`: J is the Jacobian of those losses, so row k / L_k is exactly the
gradient of log L_k). Gradient-magnitude balancing: an exponential moving average of these gradients,
    h_k <- (1 - b_t) g_k / (L_k + 1e-8) + b_t h_k,     b_t = beta / t^beta_sigma,   h_k(0) = 0,   (Eq. 1)
is rescaled to the largest norm among the tasks,
    g = sum_k alpha_k h_k,     alpha_k = max_j ||h_j|| / (||h_k|| + 1e-8),                     (Eq. 2)
as the authors' code in LibMTL does (beta 0.9, beta_sigma 0, zero-initialised average without bias
correction; the eps inside the log is 1e-8 as there). The averages are a tasks x n tensor (the size of
J), kept in memory and saved with the run. Like LibMTL, it needs the Jacobian of the shared
parameters (`space: parameters`): features differ from batch to batch, so they cannot be averaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from losses.base import GradientMethod, GradientOptions, StepContext
from losses.registry import register

EPS = 1e-8


@dataclass
class DBMTLOptions(GradientOptions):
    beta: float = 0.9  # moving-average factor of the log-loss gradients
    beta_sigma: float = 0.0  # the factor decays as beta / t^beta_sigma

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 <= self.beta < 1) or not (math.isfinite(self.beta_sigma) and self.beta_sigma >= 0):
            raise ValueError(f"DB-MTL needs 0 <= beta < 1 and beta_sigma >= 0, got {self.beta}, {self.beta_sigma}")
        if self.space != "parameters":
            raise ValueError("DB-MTL needs space: parameters (its moving average of gradients cannot follow "
                             "the shared features, which differ from batch to batch)")


@register("db-mtl", order=150)
class DBMTL(GradientMethod):
    """Log-loss gradients, averaged over steps and scaled to the largest task's norm."""

    Options = DBMTLOptions

    def __init__(self, tasks: dict[str, str], options: DBMTLOptions | None = None) -> None:
        super().__init__(tasks, options)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.average: Tensor | None = None  # h, (tasks, n); extra state
        self._logs: dict = {}

    def aggregate(self, J: Tensor, ctx: StepContext) -> Tensor:
        if J.dim() != 2 or J.shape[0] != len(self.tasks):
            raise ValueError(f"J must be (tasks={len(self.tasks)}, n), got {tuple(J.shape)}")
        if not ctx.losses:
            raise ValueError("DB-MTL needs the task losses of the step (ctx.losses)")
        losses = torch.stack([ctx.losses[t].float() for t in self.tasks]).to(J)
        log_grads = J / (losses + EPS)[:, None]
        self.steps += 1
        b = self.options.beta / float(self.steps) ** self.options.beta_sigma
        if self.average is None or self.average.shape != J.shape:
            self.average = torch.zeros_like(J)
        self.average = log_grads.lerp_(self.average.to(J), b)  # log_grads + b (average - log_grads), in one pass
        norms = torch.linalg.vector_norm(self.average, dim=1)
        alpha = norms.max() / (norms + EPS)
        # The multiplier on this step's raw gradient g_k: alpha_k (1 - b) / (L_k + eps).
        self.applied_weights = alpha * (1 - b) / (losses + EPS)
        self._logs = {f"db_mtl/alpha/{t}": alpha[i] for i, t in enumerate(self.tasks)}
        return alpha @ self.average

    def method_logs(self) -> dict:
        return dict(self._logs)

    def get_extra_state(self) -> dict:
        return {"average": self.average}

    def set_extra_state(self, state: dict) -> None:
        self.average = state.get("average")
