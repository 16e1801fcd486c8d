"""Auto-Lambda: Liu, Johns & Davison, "Auto-Lambda: Disentangling Dynamic Task Relationships" (TMLR 2022),
its one-step look-ahead meta objective, following the behaviour of the authors' code
(github.com/lorenmt/auto-lambda). Written here: TorchJD 0.18 has no Auto-Lambda.

The task weights lambda are meta-learned so that one training step on sum_k lambda_k L_k^train lowers
the primary tasks' validation loss:
    min_lambda L^val( theta - alpha sum_k lambda_k grad L_k^train(theta) ),
    d/d lambda_k = -alpha < grad L^val(theta'), grad L_k^train(theta) >          (one-step look-ahead),
the inner product the authors compute with a finite-difference Hessian-vector product; lambda takes an
Adam step (lr `meta_lr`, 1e-4, from `init` 0.1, as the authors' dense-prediction experiments) on it
before the network's step on g = J^T lambda.

How it maps onto this codebase's step (one batch and one J per step, no validation loader inside the
step): the look-ahead step is the step the run actually took. At step t, theta_t is the result of the
step from theta_{t-1} on batch t-1, and this step's batch t is data that step never saw, so it plays
the validation batch:
    meta-gradient_k = - < sum_{j primary} J_t[j], J_{t-1}[k] >,
with J_{t-1} (the previous step's J, kept in memory and saved with the run) the training gradients at
theta_{t-1}. Differences from the authors' code, all stated: the "validation" data is the next
training batch, not the validation split; the gradients are those of the shared parameters (the heads'
part of the inner product is left out); the look-ahead step is the optimiser's real step (momentum,
weight decay included) rather than a plain SGD step; alpha (the learning rate) is left out of the
meta-gradient, which only changes Adam's update through its eps. lambda is not clamped, as in the
authors' code. No meta step at the first step or with a J of another shape. Needs `space: parameters`.
`primary`: the task whose validation loss is minimised ("": every task, the multi-task setting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from losses.base import GradientMethod, GradientOptions, StepContext
from losses.registry import register


@dataclass
class AutoLambdaOptions(GradientOptions):
    primary: str = ""  # the primary task ("": all tasks)
    init: float = 0.1  # initial lambda (the authors' autol_init)
    meta_lr: float = 1e-4  # Adam learning rate of lambda (the authors' autol_lr)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(self.init) or not (math.isfinite(self.meta_lr) and self.meta_lr > 0):
            raise ValueError(f"Auto-Lambda needs a finite init and meta_lr > 0, got {self.init}, {self.meta_lr}")
        if self.space != "parameters":
            raise ValueError("Auto-Lambda needs space: parameters (it pairs the gradients of two batches, whose "
                             "shared features are different variables)")


@register("auto-lambda", order=210)
class AutoLambda(GradientMethod):
    """Task weights meta-learned on the next batch's primary-task gradient."""

    Options = AutoLambdaOptions

    def __init__(self, tasks: dict[str, str], options: AutoLambdaOptions | None = None) -> None:
        super().__init__(tasks, options)
        names = list(self.tasks)
        if self.options.primary and self.options.primary not in self.tasks:
            raise ValueError(f"Auto-Lambda primary task {self.options.primary!r} is not trained; "
                             f"trained tasks are {names}")
        self.primary = [names.index(self.options.primary)] if self.options.primary else list(range(len(names)))
        self.lambd = nn.Parameter(torch.full((len(names),), float(self.options.init)))
        self.meta_optimizer = torch.optim.Adam([self.lambd], lr=self.options.meta_lr)
        self.previous_J: Tensor | None = None
        self._meta_grad: Tensor | None = None

    def optimizer_parameters(self) -> list[nn.Parameter]:
        return []  # lambda belongs to its own Adam

    def meta_gradient(self, J: Tensor, previous_J: Tensor) -> Tensor:
        """-< sum of this batch's primary gradients, each task's gradient of the previous batch >."""
        return -(previous_J @ J[self.primary].sum(0))

    def aggregate(self, J: Tensor, ctx: StepContext) -> Tensor:
        if J.dim() != 2 or J.shape[0] != len(self.tasks):
            raise ValueError(f"J must be (tasks={len(self.tasks)}, n), got {tuple(J.shape)}")
        prev = self.previous_J
        if prev is not None and prev.shape == J.shape:
            with torch.enable_grad():
                self.meta_optimizer.zero_grad(set_to_none=True)
                self._meta_grad = self.meta_gradient(J, prev.to(J))
                self.lambd.grad = self._meta_grad.to(self.lambd).clone()
                self.meta_optimizer.step()
        self.previous_J = J.detach().clone()
        self.applied_weights = self.lambd.detach().clone()
        return self.lambd.detach().to(J) @ J

    def method_logs(self) -> dict:
        if self._meta_grad is None:
            return {}
        return {f"auto_lambda/meta_grad/{t}": self._meta_grad[i] for i, t in enumerate(self.tasks)}

    def get_extra_state(self) -> dict:
        return {"adam": self.meta_optimizer.state_dict(), "previous_J": self.previous_J}

    def set_extra_state(self, state: dict) -> None:
        self.meta_optimizer = torch.optim.Adam([self.lambd], lr=self.options.meta_lr)
        self.meta_optimizer.load_state_dict(state["adam"])
        self.previous_J = state.get("previous_J")
