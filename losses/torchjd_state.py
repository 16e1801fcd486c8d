"""Gradient-space methods backed by a stateful TorchJD weighting, with their state in the checkpoint and
their solver failures counted instead of crashing the run.

TorchJD 0.18's stateful weightings (ExcessMTL, PCD, MoDo, SDMGrad, CR-MOGM) keep their state in
attributes that are created lazily at the first call (some are buffers registered as None, some plain
ints, plus a `_state_key` that resets the state when the input's shape, dtype or device changes), so a
fresh module cannot load them from a `state_dict`. Here the method owns that state: before each call
it is written into the TorchJD object, after the call it is read back, and `get_extra_state` /
`set_extra_state` save and restore it with the run (exact resume). The TorchJD aggregator is kept out
of the module tree so that its lazily-created buffers never appear in the `state_dict`.

Solver failures: a method checks the weights it got (`check_weights`); an exception from the solver, a
non-finite weight or a method-specific failed check is counted in the buffer `solver_failures` (saved
with the run, logged as `<prefix>/solver_failures`) and the step falls back to `fallback_weights`
(the previous weights, or uniform ones), unless `on_solver_failure: error` asks to stop the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions, StepContext


@dataclass
class SolverOptions(GradientOptions):
    """Options of a gradient-space method with a weight solver."""

    on_solver_failure: str = "count"  # count: fall back to the last good weights, count and log; error: stop

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.on_solver_failure not in ("count", "error"):
            raise ValueError(f"on_solver_failure must be 'count' or 'error', got {self.on_solver_failure!r}")


class SolverFailure(RuntimeError):
    """A method's weight solver failed (with on_solver_failure: error)."""


class TorchJDStateMethod(AggregatorMethod):
    """An AggregatorMethod whose TorchJD weighting state is owned, checkpointed and checked here.

    Subclasses call `self.use(aggregator, weighting)` in `__init__`, name the state attributes of
    `weighting` in `state_names`, and give `state_key(J)` (what TorchJD stores in `_state_key`, or
    None when the weighting has no key). `state_on_cpu`: the weighting keeps its state on the CPU in
    float64 (PCD), so it is not moved to J's device.
    """

    state_names: ClassVar[tuple[str, ...]] = ()
    state_on_cpu: ClassVar[bool] = False
    log_prefix: ClassVar[str] = "solver"

    def use(self, aggregator, weighting) -> None:
        object.__setattr__(self, "aggregator", aggregator)  # not a submodule: its buffers stay out of state_dict
        object.__setattr__(self, "jd_weighting", weighting)
        self.jd_state: dict = {name: None for name in self.state_names}
        self.register_buffer("solver_failures", torch.zeros((), dtype=torch.int64))
        self._last_weights: Tensor | None = None

    def state_key(self, J: Tensor):
        return None

    def weights_of(self, J: Tensor) -> Tensor:
        """The TorchJD weighting's weights for J (a subclass may give it another matrix)."""
        return self.aggregator.weighting(J)

    def check_weights(self, w: Tensor, J: Tensor) -> str | None:
        """Why the weights `w` computed for J are a solver failure, or None when they are fine."""
        return None if bool(torch.isfinite(w).all()) else "non-finite weights"

    def fallback_weights(self, J: Tensor) -> Tensor:
        """The weights used after a failure: the last good ones, else uniform."""
        if self._last_weights is not None and self._last_weights.shape == (J.shape[0],):
            return self._last_weights.to(J)
        return torch.full((J.shape[0],), 1.0 / J.shape[0], dtype=J.dtype, device=J.device)

    def _inject(self, J: Tensor) -> None:
        w = self.jd_weighting
        present = True
        for name, value in self.jd_state.items():
            if isinstance(value, Tensor) and not self.state_on_cpu:
                value = value.to(J.device)
            present = present and value is not None
            setattr(w, name, value)
        if hasattr(w, "_state_key"):
            w._state_key = self.state_key(J) if present else None

    def _read_back(self) -> None:
        self.jd_state = {name: getattr(self.jd_weighting, name) for name in self.state_names}

    def aggregate(self, J: Tensor, ctx: StepContext) -> Tensor:
        if J.dim() != 2 or J.shape[0] != len(self.tasks):
            raise ValueError(f"J must be (tasks={len(self.tasks)}, n), got {tuple(J.shape)}")
        saved = dict(self.jd_state)
        self._inject(J)
        try:
            w = self.weights_of(J)
            why = self.check_weights(w, J)
        except Exception as e:  # noqa: BLE001 - any solver error is a counted failure
            w, why = None, f"{type(e).__name__}: {e}"
        if why is None:
            self._read_back()
        else:
            self.solver_failures += 1
            self.jd_state = saved  # the failed call's state changes are dropped
            if self.options.on_solver_failure == "error":
                raise SolverFailure(f"{type(self).__name__}'s weight solver failed ({why})")
            w = self.fallback_weights(J)
        w = w.detach().to(J)
        self.applied_weights = w
        self._last_weights = w.clone()
        return w @ J

    def method_logs(self) -> dict:
        return {f"{self.log_prefix}/solver_failures": self.solver_failures}

    # torch.nn.Module calls these when (de)serialising the state_dict.
    def get_extra_state(self) -> dict:
        state = {k: (v.detach().clone() if isinstance(v, Tensor) else v) for k, v in self.jd_state.items()}
        return {"torchjd": state, "last_weights": self._last_weights}

    def set_extra_state(self, state: dict) -> None:
        self.jd_state = {name: state["torchjd"].get(name) for name in self.state_names}
        self._last_weights = state.get("last_weights")


@dataclass
class DoubleSamplingOptions(SolverOptions):
    """Options of a method whose weights need two independent estimates of J (MoDo, SDMGrad)."""

    # previous: the second, independent estimate is J of the previous step's batch (one step old);
    # same: both are this batch's J (no double sampling: G = J J^T, biased in the stochastic setting).
    sampling: str = "previous"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sampling not in ("previous", "same"):
            raise ValueError(f"sampling must be 'previous' or 'same', got {self.sampling!r}")
        if self.sampling == "previous" and self.space != "parameters":
            raise ValueError("sampling: previous needs space: parameters (the shared features of two batches "
                             "are different variables); use sampling: same with space: features")


class DoubleSampledMethod(TorchJDStateMethod):
    """The weighting gets A = J_prev J^T (J_prev: the previous step's J, an independent mini-batch one step
    earlier) instead of the Gramian J J^T; J J^T at the first step, after a resume from a checkpoint written
    without J_prev, or with `sampling: same`. g = w @ J combines this batch's gradients. J_prev is saved with
    the run (a tasks x n float32 tensor: the size of J)."""

    def use(self, aggregator, weighting) -> None:
        super().use(aggregator, weighting)
        self.previous_J: Tensor | None = None

    def weights_of(self, J: Tensor) -> Tensor:
        prev = self.previous_J
        if self.options.sampling == "previous" and prev is not None and prev.shape == J.shape:
            A = prev.to(J) @ J.T
        else:
            A = J @ J.T
        return self.jd_weighting(A)

    def aggregate(self, J: Tensor, ctx: StepContext) -> Tensor:
        g = super().aggregate(J, ctx)
        if self.options.sampling == "previous":
            self.previous_J = J.detach().clone()
        return g

    def get_extra_state(self) -> dict:
        return super().get_extra_state() | {"previous_J": self.previous_J}

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.previous_J = state.get("previous_J")
