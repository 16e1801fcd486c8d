"""The method API: loss-space and gradient-space multi-task methods, their options and context.

A method is a small `nn.Module` built for a dict of tasks (name -> "classification" | "regression")
and an options dataclass of its own (`Method.Options`). Two kinds, one training step for both
(engine/step.py):

- **loss-space** (`LossMethod`): `forward(losses, ctx) -> (total, logs)` combines the task losses
  (scalars, this process's batch, with their graph) into the one scalar to back-propagate.
- **gradient-space** (`GradientMethod`): `aggregate(J) -> g` receives the Jacobian of the task losses,
  a float32 tensor of shape (tasks, n), rows in the order of `self.tasks`, with respect to the shared
  parameters (or, with the option `space: features`, the shared features: the MGDA-UB trick), and
  returns the one combined gradient, shape (n,). This is TorchJD's aggregator contract, so a method
  can be tested on a small matrix with no model at all.

The step, not the method, handles autocast, the gradient scaler, head gradients, clipping and DDP.
What a method sees is the same on every process: `ctx.losses` are the task losses averaged over
processes, J is the Jacobian of the process-averaged losses, and any random number a method draws
inside `forward` / `aggregate` / the hooks comes from torch's generator seeded from (seed, step).
So a method's state (parameters and buffers, i.e. its `state_dict`) stays identical on every
process, is checkpointed with the run and restored exactly.

Hooks for stateful methods: `after_step(ctx)` runs after the optimiser step (`ctx.recompute_losses()`
gives the losses of the same batch under the updated weights, as FAMO needs), `end_epoch(ctx)` after
the last step of every epoch (DWA's period). Logs: `forward` returns them; a gradient-space method
may return them from `logs()`. Keys are `weight/<task>` (the effective multiplier on that task), made by
the base class's `weight_logs(w)` from the method's weights, and anything else the method tracks; values
are floats or 0-dim tensors (read only at logging steps). The step always passes a `StepContext`.

A method is one file: the class, registered with `@register("name")` (losses/registry.py), and its
options dataclass. The contract is checked when the class is defined (`check_contract`), so a broken
method fails at import with its name; docs/extending.md states it in one place with examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from tasks import KINDS  # how a task's likelihood is modelled: "classification" | "regression"

# The two kinds of method, in the order they are listed.
METHOD_KINDS = ("loss", "gradient")


@dataclass
class StepContext:
    """What a method knows about the current training step (identical on every process)."""

    step: int  # index of this step: optimiser steps done before it
    epoch: int  # epoch this step belongs to
    steps_per_epoch: int
    iterations: int  # length of the training
    losses: dict[str, Tensor]  # task losses of this step, averaged over processes, detached, float32
    # Only in after_step: the task losses of the same batch under the updated weights (no grad, averaged
    # over processes; batch-norm running statistics are left as they were).
    recompute_losses: Callable[[], dict[str, Tensor]] | None = None
    # The parameters of the last shared layer (the ASPP, whose output every head reads), for methods
    # that balance gradient norms there (GradNorm); loss-space steps only.
    last_shared: list[nn.Parameter] = field(default_factory=list)


@dataclass
class NoOptions:
    """A method without options."""


@dataclass
class GradientOptions:
    """Options every gradient-space method has."""

    # "parameters": J is taken with respect to the shared parameters (encoder + ASPP);
    # "features": with respect to the shared features the heads read (the MGDA-UB trick: cheaper).
    space: str = "parameters"

    def __post_init__(self) -> None:
        if self.space not in ("parameters", "features"):
            raise ValueError(f"space must be 'parameters' or 'features', got {self.space!r}")


def check_contract(cls: type) -> None:
    """Raise TypeError naming the class unless it is a well-formed method: `kind` one of METHOD_KINDS,
    `Options` a dataclass (a GradientOptions for a gradient-space method) whose fields all have
    defaults and are plain names."""
    where = f"method class {cls.__qualname__} ({cls.__module__})"
    kind = getattr(cls, "kind", None)
    if kind not in METHOD_KINDS:
        raise TypeError(f"{where}: kind must be one of {list(METHOD_KINDS)} (subclass LossMethod or "
                        f"GradientMethod), got {kind!r}")
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise TypeError(f"{where}: Options must be a dataclass, got {options!r}")
    if kind == "gradient" and not issubclass(options, GradientOptions):
        raise TypeError(f"{where}: a gradient-space method's Options must subclass GradientOptions, "
                        f"got {options.__qualname__}")
    for f in dataclasses.fields(options):
        if not f.name.isidentifier() or f.name.startswith("_"):
            raise TypeError(f"{where}: option name {f.name!r} is not a plain name")
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TypeError(f"{where}: option {f.name!r} has no default (every option needs one)")


class Method(nn.Module):
    """Base class of both kinds: validates the tasks, holds the options, defines the hooks."""

    kind: ClassVar[str]
    Options: ClassVar[type] = NoOptions

    def __init_subclass__(cls, **kwargs) -> None:
        """The contract, checked when a method class is defined (so a broken method fails at import)."""
        super().__init_subclass__(**kwargs)
        check_contract(cls)

    def __init__(self, tasks: dict[str, str], options=None) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a method needs at least one task")
        bad = {t: k for t, k in tasks.items() if k not in KINDS}
        if bad:
            raise ValueError(f"unknown task kind(s) {bad}; valid kinds are {list(KINDS)}")
        self.tasks: dict[str, str] = dict(tasks)
        self.options = options if options is not None else self.Options()
        if not isinstance(self.options, self.Options):
            raise TypeError(f"{type(self).__name__} takes {self.Options.__name__} options, "
                            f"got {type(self.options).__name__}")

    @classmethod
    def describe(cls, name: str, options, tasks: tuple[str, ...]) -> str:
        """A short description for result tables: the name and the options that differ from the defaults."""
        default = cls.Options()
        changed = [f"{f.name}={getattr(options, f.name)}" for f in dataclasses.fields(options)
                   if getattr(options, f.name) != getattr(default, f.name)]
        return name + (f" ({', '.join(changed)})" if changed else "")

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """The method's parameters trained by the run's optimiser (with `method.lr_mult`); a method that
        updates its parameters itself (FAMO's logits) returns fewer."""
        return list(self.parameters())

    def after_step(self, ctx: StepContext) -> None:
        """Called after the optimiser step (and the scheduler's)."""

    def end_epoch(self, ctx: StepContext) -> None:
        """Called after the last step of each epoch."""

    def weight_logs(self, weights) -> dict:
        """`weight/<task>` for every task from its effective weight: a (tasks,) tensor in `self.tasks` order,
        or a dict task -> weight. The one place the key is written."""
        if isinstance(weights, dict):
            return {f"weight/{t}": weights[t] for t in self.tasks}
        return {f"weight/{t}": weights[i] for i, t in enumerate(self.tasks)}

    def check_losses(self, losses: dict[str, Tensor]) -> None:
        """Raise unless `losses` has exactly this method's tasks."""
        if set(losses) != set(self.tasks):
            raise ValueError(f"losses are for tasks {sorted(losses)} but the method was built for "
                             f"{sorted(self.tasks)}")


class LossMethod(Method):
    """Combines the task losses into one scalar: `forward(losses, ctx) -> (total, logs)`."""

    kind = "loss"

    def forward(self, losses: dict[str, Tensor], ctx: StepContext | None = None) -> tuple[Tensor, dict]:
        raise NotImplementedError


class GradientMethod(Method):
    """Combines the rows of the task Jacobian into one gradient: `aggregate(J) -> g`."""

    kind = "gradient"
    Options: ClassVar[type] = GradientOptions

    def aggregate(self, J: Tensor, ctx: StepContext | None = None) -> Tensor:
        raise NotImplementedError

    def forward(self, J: Tensor, ctx: StepContext | None = None) -> Tensor:
        return self.aggregate(J, ctx)

    def logs(self) -> dict:
        """What to log about the last `aggregate` call (default: nothing)."""
        return {}
