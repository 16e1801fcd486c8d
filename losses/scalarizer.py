"""Loss-space methods backed by a TorchJD scalarizer (torchjd.scalarization)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from losses.base import LossMethod, StepContext


class ScalarizerMethod(LossMethod):
    """`total` is exactly `self.scalarizer(L)` for the vector L of task losses (in `self.tasks` order);
    subclasses build the scalarizer in `__init__`.

    The logged `weight/<task>` is the effective multiplier dtotal/dL_task of this step (one backward
    through the scalarizer alone, a handful of scalar operations), so random, learned and non-linear
    scalarisations are logged alike.
    """

    scalarizer: nn.Module

    def loss_vector(self, losses: dict[str, Tensor]) -> Tensor:
        self.check_losses(losses)
        values = torch.stack([losses[t].float() for t in self.tasks])
        # Constant losses (no graph) still get effective weights: differentiate with respect to them.
        return values if values.requires_grad else values.requires_grad_()

    def forward(self, losses: dict[str, Tensor], ctx: StepContext | None = None) -> tuple[Tensor, dict]:
        values = self.loss_vector(losses)
        total = self.scalarizer(values)
        return total, self.effective_weights(total, values)

    def effective_weights(self, total: Tensor, values: Tensor) -> dict:
        (w,) = torch.autograd.grad(total, values, retain_graph=True)
        return self.weight_logs(w)
