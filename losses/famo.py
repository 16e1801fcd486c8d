"""FAMO: Liu et al., "FAMO: Fast Adaptive Multitask Optimization" (NeurIPS 2023), Algorithm 2, by
TorchJD (torchjd.scalarization.FAMO).

total = c sum_k z_k log(L_k - b_k + eps), z = softmax(xi), c = 1 / sum_k z_k / (L_k - b_k + eps) (c and
z constant in the backward), so the update is a convex combination of the task gradients scaled by
1 / L_k. After the optimiser step the step hook recomputes the losses of the same batch under the new
weights (one extra forward, no backward) and FAMO takes one Adam step on the logits xi towards the
tasks whose log-loss fell least.

Integration (TorchJD keeps the logits' Adam outside `state_dict`, and records the losses it was
given, which under DDP are each process's own):
- the logits are updated by FAMO's own Adam only, never by the run's optimiser;
- the "before" losses FAMO compares against are the process-averaged ones (`ctx.losses`), as are the
  recomputed "after" losses, so every process takes the same Adam step;
- Adam's state is saved with the method (`get_extra_state`), so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from losses.base import StepContext, Weighting
from losses.registry import register
from losses.scalarizer import ScalarizerMethod


@dataclass
class FAMOOptions:
    lr: float = 0.025  # Adam learning rate of the logits (the paper's)
    weight_decay: float = 1e-3  # gamma: Adam's weight decay on the logits (paper's Algorithm 2, LibMTL)

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"FAMO {name} must be finite and >= 0, got {value}")


@register("famo", order=80)
class FAMO(ScalarizerMethod):
    """Fast adaptive task weights from the change of each log-loss over one step."""

    Options = FAMOOptions

    def __init__(self, tasks: dict[str, str], options: FAMOOptions | None = None) -> None:
        from torchjd.scalarization import FAMO as TorchJDFAMO  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.scalarizer = TorchJDFAMO(len(self.tasks), lr=self.options.lr, weight_decay=self.options.weight_decay)

    def optimizer_parameters(self) -> list[nn.Parameter]:
        return []  # the logits belong to FAMO's own Adam

    def weigh(self, losses: dict[str, Tensor], ctx: StepContext) -> Weighting:
        values = self.loss_vector(losses)
        total = self.scalarizer(values)
        (w,) = torch.autograd.grad(total, values, retain_graph=True)
        # Record the process-averaged losses as FAMO's "before" (the scalarizer keeps the last values it
        # saw); the result of this call is not used.
        with torch.no_grad():
            self.scalarizer(torch.stack([ctx.losses[t].float() for t in self.tasks]))
        z = torch.softmax(self.scalarizer._w.detach(), dim=0)
        return Weighting(w, logs={f"famo_z/{t}": z[i] for i, t in enumerate(self.tasks)}, total=total)

    def after_step(self, ctx: StepContext) -> None:
        if ctx.recompute_losses is None:
            raise RuntimeError("FAMO needs the losses recomputed after the step (ctx.recompute_losses)")
        after = ctx.recompute_losses()
        self.scalarizer.update(torch.stack([after[t].float() for t in self.tasks]))

    # torch.nn.Module calls these when (de)serialising the state_dict: Adam's moments and step count.
    def get_extra_state(self) -> dict:
        adam = self.scalarizer._optimizer  # created by TorchJD at the first update
        return {"adam": adam.state_dict() if adam is not None else None}

    def set_extra_state(self, state: dict) -> None:
        if state.get("adam") is None:
            self.scalarizer._optimizer = None
            return
        adam = torch.optim.Adam([self.scalarizer._w], lr=self.options.lr, weight_decay=self.options.weight_decay)
        adam.load_state_dict(state["adam"])
        self.scalarizer._optimizer = adam
