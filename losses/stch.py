"""STCH: Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective Optimization" (ICML 2024),
the smooth Tchebycheff scalarisation mu log sum_k exp(lambda_k (f_k - z_k) / mu), by TorchJD
(torchjd.scalarization.STCH), with the multi-task recipe of the authors' STCH_MTL code
and LibMTL: log-normalised losses and a warm-up that measures the nadir point.

    epochs < warmup_epochs:    total = sum_k log L_k
    epoch == warmup_epochs:    total = sum_k log L_k, and the losses are averaged into the nadir point z_k
    later epochs:              total = K mu log sum_k exp( log(L_k / z_k) / mu )
                                     = K * STCH_mu(K f),  f_k = log(L_k / z_k)
(TorchJD's STCH_mu(y) = mu log sum_k exp(y_k / (K mu)) with its uniform preferences 1/K)
the smooth maximum of the log-losses relative to their warm-up level (mu -> 0: K times the worst one;
large mu: their sum, plus a constant). Unlike LibMTL, the value keeps the subtracted max (TorchJD's stabilisation
is value-preserving); the gradients are the same. The nadir point is the mean of the process-averaged
losses over the warm-up epoch (`ctx.losses`), so every process uses the same one; it is saved with the
run. Defaults are LibMTL's (mu 1, 4 warm-up epochs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from losses.base import StepContext, Weighting
from losses.registry import register
from losses.scalarizer import ScalarizerMethod

EPS = 1e-20  # inside the logs, as the reference code


@dataclass
class STCHOptions:
    mu: float = 1.0  # smoothing: smaller is closer to the maximum
    warmup_epochs: int = 4  # epochs of sum_k log L_k before the nadir epoch (LibMTL's STCH_warmup_epoch)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mu) and self.mu > 0):
            raise ValueError(f"STCH mu must be finite and > 0, got {self.mu}")
        if self.warmup_epochs < 0:
            raise ValueError(f"STCH warmup_epochs must be >= 0, got {self.warmup_epochs}")


@register("stch", order=100)
class STCH(ScalarizerMethod):
    """The smooth maximum of the log-losses normalised by their warm-up level."""

    Options = STCHOptions

    def __init__(self, tasks: dict[str, str], options: STCHOptions | None = None) -> None:
        from torchjd.scalarization import STCH as TorchJDSTCH  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        k = len(self.tasks)
        self.scalarizer = TorchJDSTCH(mu=self.options.mu)
        self.register_buffer("loss_sum", torch.zeros(k))  # sum of the losses seen in the nadir epoch
        self.register_buffer("loss_count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("nadir", torch.zeros(k))  # zeros until the nadir epoch is over

    def weigh(self, losses: dict[str, Tensor], ctx: StepContext) -> Weighting:
        values = self.loss_vector(losses)
        seen = torch.stack([ctx.losses[t].detach().float() for t in self.tasks])
        if ctx.epoch <= self.options.warmup_epochs:
            if ctx.epoch == self.options.warmup_epochs:
                self.loss_sum += seen.to(self.loss_sum)
                self.loss_count += 1
            return self.scalarized(torch.log(values + EPS).sum(), values, {"stch/warmup": 1.0})
        if not bool((self.nadir > 0).all()):  # the first step after the nadir epoch (or no nadir epoch seen)
            self.nadir.copy_(self.loss_sum / self.loss_count if int(self.loss_count) > 0 else seen.to(self.nadir))
        f = torch.log(values / self.nadir.to(values) + EPS)
        k = len(self.tasks)
        return self.scalarized(k * self.scalarizer(k * f), values,
                               {f"stch/nadir/{t}": self.nadir[i] for i, t in enumerate(self.tasks)})
