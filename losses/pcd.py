"""PCD: "Not All Objectives Are Born Equal: Priority-Constrained Descent for Hierarchical Multi-Objective
Optimization" (TMLR 2026, arXiv:2606.29521; reference code github.com/DaraVaram/priority-constrained-descent),
the priority-constrained quadratic program below, by TorchJD 0.18 (torchjd.aggregation.PCD: the quadratic
program solved exactly with Goldfarb-Idnani's dual active-set method).

One task is primary (`primary`, default: the first trained task, i.e. semantic); the others are
secondary. With g~_k = g_k / sqrt(v_k + eps), v_k the bias-corrected moving average (decay beta) of
||g_k||^2,
    d~ = argmin_d 1/2 ||d - g~_1||^2   s.t.   <g~_j, d> >= tau ||g~_j||^2  for every secondary j,
and g = d~ ||g_1|| / ||d~||: follow the primary gradient as closely as possible while each secondary
task keeps a fraction tau of the progress its own normalised step would make. When the constraints are
infeasible TorchJD returns g_1 (by design). The moving average is saved with the run.

Solver failures: an exception or non-finite weights from the QP are counted (`pcd/solver_failures`,
saved with the run) and the step falls back to the last good weights (uniform at the first step), or,
with `on_solver_failure: error`, stops the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from losses.registry import register
from losses.torchjd_state import SolverOptions, TorchJDStateMethod


@dataclass
class PCDOptions(SolverOptions):
    primary: str = ""  # the primary task ("": the first trained task)
    tau: float = 0.02  # fraction of normalised progress guaranteed to each secondary task (TorchJD's default)
    beta: float = 0.999  # decay of the squared-norm moving average
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 <= self.tau <= 1) or not (0 <= self.beta < 1) or not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"PCD needs 0 <= tau <= 1, 0 <= beta < 1 and eps >= 0, got tau={self.tau}, "
                             f"beta={self.beta}, eps={self.eps}")


@register("pcd", order=170)
class PCD(TorchJDStateMethod):
    """Follow the primary task's gradient subject to a guaranteed progress on every other task."""

    Options = PCDOptions
    state_names = ("_sq_norm_ema", "_n_steps")
    state_on_cpu = True  # TorchJD keeps the moving average on the CPU in float64
    log_prefix = "pcd"

    def __init__(self, tasks: dict[str, str], options: PCDOptions | None = None) -> None:
        from torchjd.aggregation import PCD as TorchJDPCD  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        names = list(self.tasks)
        primary = self.options.primary or names[0]
        if primary not in self.tasks:
            raise ValueError(f"PCD primary task {primary!r} is not trained; trained tasks are {names}")
        # J's rows reordered so that the primary task comes first, as TorchJD expects.
        self.order = [names.index(primary)] + [i for i, t in enumerate(names) if t != primary]
        aggregator = TorchJDPCD(tau=self.options.tau, beta=self.options.beta, eps=self.options.eps)
        self.use(aggregator, aggregator.gramian_weighting)

    def state_key(self, J):
        return J.shape[0]

    def weights_of(self, J: Tensor) -> Tensor:
        order = torch.tensor(self.order, device=J.device)
        w_ordered = self.aggregator.weighting(J[order])
        w = torch.empty_like(w_ordered)
        w[order] = w_ordered
        return w
