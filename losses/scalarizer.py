"""Loss-space methods backed by a TorchJD scalarizer (torchjd.scalarization)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from losses.base import LossMethod, StepContext, Weighting


class ScalarizerMethod(LossMethod):
    """`total` is exactly `self.scalarizer(L)` for the vector L of task losses (in `self.tasks` order);
    subclasses build the scalarizer in `__init__`.

    A scalarisation need not be linear in the losses, so `weigh` returns the total itself with the
    effective weights dtotal/dL_task of this step (one backward through the scalarizer alone, a handful
    of scalar operations), logged as `weight/<task>`: random, learned and non-linear scalarisations are
    logged alike.
    """

    scalarizer: nn.Module

    def loss_vector(self, losses: dict[str, Tensor]) -> Tensor:
        values = torch.stack([losses[t].float() for t in self.tasks])
        # Constant losses (no graph) still get effective weights: differentiate with respect to them.
        return values if values.requires_grad else values.requires_grad_()

    def weigh(self, losses: dict[str, Tensor], ctx: StepContext) -> Weighting:
        values = self.loss_vector(losses)
        return self.scalarized(self.scalarizer(values), values)

    def scalarized(self, total: Tensor, values: Tensor, logs: dict | None = None) -> Weighting:
        """The Weighting of a scalarised `total` of the loss vector `values`: the total itself and its
        effective weights dtotal/dL."""
        (w,) = torch.autograd.grad(total, values, retain_graph=True)
        return Weighting(w, logs=logs or {}, total=total)
