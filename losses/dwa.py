"""Dynamic Weight Average: Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention" (CVPR 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from losses.base import LossMethod, StepContext, Weighting
from losses.registry import register


@dataclass
class DWAOptions:
    temperature: float = 2.0  # T; larger is more uniform
    window: int = 0  # 0: periods are epochs (LibMTL); N > 0: periods of N iterations

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.window < 0:
            raise ValueError(f"window must be >= 0 (0: epochs), got {self.window}")


@register("dwa", order=30)
class DWA(LossMethod):
    """total = sum_k lambda_k L_k, lambda_k = K softmax_k(r / T), r_k = Lbar_k(t-1) / Lbar_k(t-2).

    Lbar_k(t) is task k's training loss averaged over period t (an epoch, or `window` iterations);
    the weights are 1 during the first two periods. The averages are of the process-averaged losses
    (`ctx.losses`), so every DDP process holds the same history. Written here rather than taken from
    torchjd.scalarization.DWA (same arithmetic, a test compares them) because TorchJD keeps the
    history in plain attributes, outside `state_dict`, so a resumed run would restart it, and sums
    the losses it is given, which under DDP are each process's own.
    """

    Options = DWAOptions

    def __init__(self, tasks: dict[str, str], options: DWAOptions | None = None) -> None:
        super().__init__(tasks, options)
        k = len(self.tasks)
        self.register_buffer("loss_sum", torch.zeros(k))  # current period
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("history", torch.zeros(2, k))  # averages of the two previous periods, older first
        self.register_buffer("periods", torch.zeros((), dtype=torch.int64))  # finished periods (capped at 2)

    def weights(self) -> Tensor:
        """(K,) weights for the current period."""
        if int(self.periods) < 2:
            return torch.ones_like(self.loss_sum)
        rates = self.history[1] / self.history[0]
        return len(self.tasks) * torch.softmax(rates / self.options.temperature, dim=0)

    def weigh(self, losses: dict[str, Tensor], ctx: StepContext) -> Weighting:
        w = self.weights()
        self.loss_sum += torch.stack([ctx.losses[t].detach().float() for t in self.tasks])
        self.count += 1
        return Weighting(w)

    def end_period(self) -> None:
        """Close the current period: its average becomes the newest history entry."""
        if int(self.count) == 0:
            return
        self.history.copy_(torch.stack([self.history[1], self.loss_sum / self.count]))
        self.periods.copy_(torch.clamp(self.periods + 1, max=2))
        self.loss_sum.zero_()
        self.count.zero_()

    def end_epoch(self, ctx: StepContext) -> None:
        if self.options.window == 0:
            self.end_period()

    def after_step(self, ctx: StepContext) -> None:
        if self.options.window and (ctx.step + 1) % self.options.window == 0:
            self.end_period()
