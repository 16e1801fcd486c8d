"""GradNorm: Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
Multitask Networks" (ICML 2018), Sec. 3. Written here: TorchJD 0.18 has no GradNorm.

total = sum_k w_k L_k with learned weights w (initially 1). Every step, on the last shared layer W
(the ASPP, `ctx.last_shared`):
    G_k = || grad_W (w_k L_k) || = w_k || grad_W L_k ||,      Gbar = mean_k G_k,
    r_k = Ltilde_k / mean_j Ltilde_j,   Ltilde_k = L_k(t) / L_k(0)   (inverse training rate),
    L_grad = sum_k | G_k - Gbar r_k^alpha |,   Gbar and the targets held constant.
The network is trained on sum_k w_k L_k (w constant); w is trained by the run's optimiser on
L_grad alone (learning rate x `method.lr_mult`); after each step w is renormalised to sum to K.
The norms cost one extra backward per task from the losses to W (a short path: W is the layer just
before the heads). L_k(0) and L_k(t) are the process-averaged losses, so every process computes
the same targets; the norms are each process's own, and the gradients of w are averaged over
processes by the step like every method parameter's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from losses.base import LossMethod, StepContext, Weighting
from losses.registry import register


@dataclass
class GradNormOptions:
    alpha: float = 1.5  # asymmetry: 0 equalises the gradient norms, larger favours slow tasks

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"GradNorm alpha must be finite and >= 0, got {self.alpha}")


def gradnorm_targets(norms: Tensor, weights: Tensor, losses: Tensor, initial: Tensor, alpha: float) -> Tensor:
    """The target gradient norms Gbar * r_k^alpha (GradNorm's Eq. 2's right-hand side), constant."""
    g = weights.detach() * norms
    ratios = losses / initial
    return (g.mean() * (ratios / ratios.mean()) ** alpha).detach()


@register("gradnorm", order=90)
class GradNorm(LossMethod):
    """Learned task weights that equalise gradient norms, scaled by each task's relative training rate."""

    Options = GradNormOptions

    def __init__(self, tasks: dict[str, str], options: GradNormOptions | None = None) -> None:
        super().__init__(tasks, options)
        k = len(self.tasks)
        self.weights = nn.Parameter(torch.ones(k))
        self.register_buffer("initial_losses", torch.zeros(k))  # L_k(0); zeros until the first step

    def weigh(self, losses: dict[str, Tensor], ctx: StepContext) -> Weighting:
        if not ctx.last_shared:
            raise ValueError("GradNorm needs the last shared layer's parameters (ctx.last_shared)")
        values = torch.stack([losses[t].float() for t in self.tasks])
        seen = torch.stack([ctx.losses[t].detach().float() for t in self.tasks])
        if not bool((self.initial_losses > 0).all()):
            self.initial_losses.copy_(seen)
        norms = torch.stack([
            torch.linalg.vector_norm(torch.cat([g.flatten().float() for g in torch.autograd.grad(
                values[i], ctx.last_shared, retain_graph=True, allow_unused=True) if g is not None]))
            for i in range(len(self.tasks))])
        targets = gradnorm_targets(norms, self.weights, seen, self.initial_losses, self.options.alpha)
        grad_loss = (self.weights * norms - targets).abs().sum()
        # The value is sum_k w_k L_k; the network's gradient comes from it (w constant), w's from L_grad
        # through the extra term, whose value is 0.
        return Weighting(self.weights.detach(), extra=grad_loss - grad_loss.detach(),
                         logs={f"gradnorm/norm/{t}": norms[i] for i, t in enumerate(self.tasks)}
                         | {"gradnorm/loss": grad_loss.detach()})

    def after_step(self, ctx: StepContext) -> None:
        with torch.no_grad():  # renormalise: sum_k w_k = K
            self.weights.mul_(len(self.tasks) / self.weights.sum())
