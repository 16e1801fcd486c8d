"""MoCo: Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in Multi-objective
Learning: A Provably Convergent Approach" (ICLR 2023), Algorithm 1 (the tracking update of y and the
projected update of lambda). Written here: TorchJD 0.18 has no MoCo.

A tracking estimate y_k of each task gradient corrects the bias of stochastic MGDA:
    g~_k = g_k / (||g_k|| + 1e-8) * L_k                        (LibMTL's normalisation of the gradients)
    y_k <- y_k - beta_t (y_k - g~_k),                          beta_t = beta / t^beta_sigma,   y(0) = 0
    lambda <- P(lambda - gamma_t (Y Y^T + rho I) lambda),      gamma_t = gamma / t^gamma_sigma
    g = Y^T lambda,
lambda starting uniform. P is the Euclidean projection onto the simplex (as in the paper); with
`lambda_update: softmax` it is a softmax, as in LibMTL's MoCo (the authors' shared code). Defaults are
LibMTL's (beta 0.5, beta_sigma 0.5, gamma 0.1, gamma_sigma 0.5, rho 0). L_k are the process-averaged
losses (`ctx.losses`). Y is a tasks x n tensor (the size of J), kept in memory and saved with the run;
like LibMTL, MoCo needs `space: parameters`. No solver: non-finite weights are an error of the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from losses.base import GradientMethod, GradientOptions, StepContext
from losses.registry import register


@dataclass
class MoCoOptions(GradientOptions):
    beta: float = 0.5  # step size of the gradient tracking y
    beta_sigma: float = 0.5
    gamma: float = 0.1  # step size of lambda
    gamma_sigma: float = 0.5
    rho: float = 0.0  # l2 regularisation of lambda's update
    lambda_update: str = "projection"  # projection (the paper) | softmax (LibMTL)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("beta", "beta_sigma", "gamma", "gamma_sigma", "rho"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"MoCo {name} must be finite and >= 0, got {value}")
        if not 0 < self.beta <= 1:
            raise ValueError(f"MoCo beta must be in (0, 1], got {self.beta}")
        if self.lambda_update not in ("projection", "softmax"):
            raise ValueError(f"lambda_update must be 'projection' or 'softmax', got {self.lambda_update!r}")
        if self.space != "parameters":
            raise ValueError("MoCo needs space: parameters (its gradient tracking cannot follow the shared "
                             "features, which differ from batch to batch)")


def project_onto_simplex(v: Tensor) -> Tensor:
    """The Euclidean projection of v onto {w >= 0, sum w = 1} (sort-based, Held et al. 1974)."""
    u, _ = torch.sort(v, descending=True)
    cumulative = torch.cumsum(u, 0) - 1
    k = torch.arange(1, len(v) + 1, device=v.device, dtype=v.dtype)
    rho = int(torch.nonzero(u - cumulative / k > 0).max())
    return (v - cumulative[rho] / (rho + 1)).clamp_min(0)


@register("moco", order=180)
class MoCo(GradientMethod):
    """Stochastic MGDA on tracked (bias-corrected) task gradients."""

    Options = MoCoOptions

    def __init__(self, tasks: dict[str, str], options: MoCoOptions | None = None) -> None:
        super().__init__(tasks, options)
        k = len(self.tasks)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("lambd", torch.full((k,), 1.0 / k))
        self.y: Tensor | None = None  # (tasks, n); extra state

    def aggregate(self, J: Tensor, ctx: StepContext) -> Tensor:
        if J.dim() != 2 or J.shape[0] != len(self.tasks):
            raise ValueError(f"J must be (tasks={len(self.tasks)}, n), got {tuple(J.shape)}")
        if not ctx.losses:
            raise ValueError("MoCo needs the task losses of the step (ctx.losses)")
        o = self.options
        losses = torch.stack([ctx.losses[t].float() for t in self.tasks]).to(J)
        grads = J * (losses / (torch.linalg.vector_norm(J, dim=1) + 1e-8))[:, None]  # one pass over J
        self.steps += 1
        t = float(self.steps)
        if self.y is None or self.y.shape != J.shape:
            self.y = torch.zeros_like(J)
        self.y = self.y.to(J).lerp_(grads, o.beta / t ** o.beta_sigma)  # y - b (y - grads), in place
        k = len(self.tasks)
        lambd = self.lambd.to(J)
        step = lambd - o.gamma / t ** o.gamma_sigma * ((self.y @ self.y.T + o.rho * torch.eye(k).to(J)) @ lambd)
        lambd = project_onto_simplex(step) if o.lambda_update == "projection" else torch.softmax(step, 0)
        self.lambd.copy_(lambd)
        self.applied_weights = self.lambd.clone()  # the weights of the tracked gradients: g = lambda @ y
        return lambd @ self.y

    def get_extra_state(self) -> dict:
        return {"y": self.y}

    def set_extra_state(self, state: dict) -> None:
        self.y = state.get("y")
