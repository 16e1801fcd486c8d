"""Nash-MTL: Navon et al., "Multi-Task Learning as a Bargaining Game" (ICML 2022), Algorithm 1, by
TorchJD (torchjd.aggregation.NashMTL; the sequence of convex problems solved with cvxpy + ECOS).

g = J^T alpha with alpha the Nash bargaining solution (J J^T alpha = 1 / alpha), found by `optim_niter`
concave-convex iterations, then scaled so ||g|| <= `max_norm` (0: no clipping).

Solver failures are never silent. TorchJD, like the official code, catches a failed ECOS solve and
keeps the previous weights; here every failed or non-optimal solve is counted (`solver_failures`,
logged as `nash/solver_failures`, saved with the run) and, with `on_solver_failure: error`, stops the
run. Building the method fails at once when ECOS is not installed (cvxpy >= 1.6 no longer pulls it
in; without it every solve would fail and the weights stay at their initial value).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register


class SolverFailure(RuntimeError):
    """Nash-MTL's convex solver failed (with on_solver_failure: error)."""


@dataclass
class NashMTLOptions(GradientOptions):
    max_norm: float = 1.0  # ||g|| is clipped to this (0: no clipping); the paper's value
    update_weights_every: int = 1  # solve every this many steps, reuse the weights in between
    optim_niter: int = 20  # concave-convex iterations per solve
    on_solver_failure: str = "count"  # count: keep the previous weights, count and log; error: stop the run

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.max_norm) and self.max_norm >= 0):
            raise ValueError(f"max_norm must be finite and >= 0, got {self.max_norm}")
        if self.update_weights_every < 1 or self.optim_niter < 1:
            raise ValueError("update_weights_every and optim_niter must be >= 1")
        if self.on_solver_failure not in ("count", "error"):
            raise ValueError(f"on_solver_failure must be 'count' or 'error', got {self.on_solver_failure!r}")


def require_ecos() -> None:
    import cvxpy

    if "ECOS" not in cvxpy.installed_solvers():
        raise RuntimeError("nash-mtl needs the ECOS solver for cvxpy, which cvxpy >= 1.6 no longer installs: "
                           "pip install ecos (it is in this project's dependencies)")


@register("nash-mtl", order=80)
class NashMTL(AggregatorMethod):
    """The Nash bargaining solution of the task gradients, norm-clipped."""

    Options = NashMTLOptions

    def __init__(self, tasks: dict[str, str], options: NashMTLOptions | None = None) -> None:
        from torchjd.aggregation import NashMTL as TorchJDNashMTL  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        require_ecos()
        o = self.options
        self.aggregator = TorchJDNashMTL(n_tasks=len(self.tasks), max_norm=o.max_norm,
                                         update_weights_every=o.update_weights_every, optim_niter=o.optim_niter)
        self.register_buffer("solver_failures", torch.zeros((), dtype=torch.int64))
        weighting = self.aggregator.weighting
        build_problem = weighting._init_optim_problem

        def build_counted_problem() -> None:  # TorchJD builds the cvxpy problem at its first call
            build_problem()
            solve = weighting.prob.solve

            def counted_solve(*args, **kwargs):
                try:
                    with warnings.catch_warnings():  # "not DPP": the problem is rebuilt per solve, as designed
                        warnings.filterwarnings("ignore", message=".*not DPP.*")
                        result = solve(*args, **kwargs)
                except Exception as e:
                    self._failed(f"{type(e).__name__}: {e}")
                    raise  # TorchJD keeps the previous weights
                if weighting.prob.status not in ("optimal", "optimal_inaccurate"):
                    self._failed(f"status {weighting.prob.status}")
                return result

            weighting.prob.solve = counted_solve

        weighting._init_optim_problem = build_counted_problem

    def _failed(self, why: str) -> None:
        self.solver_failures += 1
        if self.options.on_solver_failure == "error":
            raise SolverFailure(f"Nash-MTL's ECOS solve failed ({why})")

    def method_logs(self) -> dict:
        return {"nash/solver_failures": self.solver_failures}

    # TorchJD keeps the solver's state in plain attributes: save and restore it with the method.
    def get_extra_state(self) -> dict:
        w = self.aggregator.weighting
        return {"step": float(w.step), "prvs_alpha": torch.from_numpy(np.asarray(w.prvs_alpha, dtype=np.float64)),
                "normalization_factor": torch.from_numpy(np.asarray(w.normalization_factor, dtype=np.float64))}

    def set_extra_state(self, state: dict) -> None:
        w = self.aggregator.weighting
        w.step = state["step"]
        w.prvs_alpha = state["prvs_alpha"].numpy().copy()
        w.normalization_factor = state["normalization_factor"].numpy().copy()
        if w.step > 0:  # TorchJD builds its problem only at step 0
            w._init_optim_problem()
