"""The method API: loss-space and gradient-space multi-task methods, their options and context.

A method is a small `nn.Module` built for a dict of tasks (name -> "classification" | "regression")
and an options dataclass of its own (`Method.Options`). Two kinds, one training step for both
(engine/step.py):

- **loss-space** (`LossMethod`): `weigh(losses, ctx) -> Weighting` gives the per-task weights w_t for
  the task losses (scalars, this process's batch, with their graph) and, where the objective has one, an
  extra term (uncertainty weighting's log-variance regulariser); the base class's `forward(losses, ctx)
  -> (total, logs)` composes total = sum_t w_t L_t + extra, the one scalar to back-propagate. A
  non-linear scalarisation (GLS, STCH, ...) gives its own `total` and its effective weights dtotal/dL_t.
- **gradient-space** (`GradientMethod`): `aggregate(J) -> g` receives the Jacobian of the task losses,
  a float32 tensor of shape (tasks, n), rows in the order of `self.tasks`, with respect to the shared
  parameters (or, with the option `space: features`, the shared features: the MGDA-UB trick), and
  returns the one combined gradient, shape (n,). This is TorchJD's aggregator contract, so a method
  can be tested on a small matrix with no model at all (`StepContext.of()` for the context). Where g is
  a weighted sum of the rows, g = w @ J, the method sets `self.applied_weights = w`.

The step, not the method, handles autocast, the gradient scaler, head gradients, clipping and DDP.
What a method sees is the same on every process: `ctx.losses` are the task losses averaged over
processes, J is the Jacobian of the process-averaged losses, and any random number a method draws
inside `forward` / `aggregate` / the hooks comes from torch's generator seeded from (seed, step).
So a method's state (parameters and buffers, i.e. its `state_dict`) stays identical on every
process, is checkpointed with the run and restored exactly.

Hooks for stateful methods: `after_step(ctx)` runs after the optimiser step (`ctx.recompute_losses()`
gives the losses of the same batch under the updated weights, as FAMO needs), `end_epoch(ctx)` after
the last step of every epoch (DWA's period). Logs: `weight/<task>` (the effective multiplier on that
task) is written by the base class alone, once, from the weights the method returned (loss-space) or
set in `applied_weights` (gradient-space); anything else the method tracks goes in `Weighting.logs` or
`method_logs()`; values are floats or 0-dim tensors (read only at logging steps). The step always
passes a `StepContext`: `ctx` has no default anywhere.

A method is one file: the class, registered with `@register("name")` (losses/registry.py), and its
options dataclass. The contract is checked when the class is defined (`check_contract`), so a broken
method fails at import with its name; docs/extending.md states it in one place with examples.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
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

    @classmethod
    def of(cls, losses: Mapping[str, Tensor | float] | None = None, step: int = 0, epoch: int = 0,
           last_shared: list[nn.Parameter] | None = None) -> StepContext:
        """The context of a call outside a training run (tests, notebooks): one process, step `step` of
        epoch `epoch`, `ctx.losses` the given losses detached as float32 (what the step passes)."""
        return cls(step=step, epoch=epoch, steps_per_epoch=step + 1, iterations=step + 1,
                   losses={t: torch.as_tensor(v).detach().float() for t, v in (losses or {}).items()},
                   last_shared=list(last_shared or []))


@dataclass
class Weighting:
    """What a loss-space method's `weigh` returns; the base class composes the total from it and writes the
    `weight/<task>` logs from `weights`, once.

    total = sum_t w_t * L_t + extra, summed in `self.tasks` order; a per-task `extra` (a mapping task ->
    term) adds each term right after its task's, so total = sum_t (w_t L_t + e_t)."""

    # w_t, the multiplier on L_t: a (tasks,) tensor in `self.tasks` order or a mapping task -> float or
    # 0-dim tensor; with its graph when the weights are learned through the total (uncertainty weighting)
    weights: Tensor | Mapping[str, float | Tensor]
    extra: Tensor | Mapping[str, Tensor] | None = None  # a term of the objective besides the weighted losses
    logs: dict = field(default_factory=dict)  # anything else the method tracks (not `weight/...`)
    # Only for an objective that is not linear in the losses (a TorchJD scalarisation): the total itself;
    # `weights` are then its effective weights dtotal/dL_t and `extra` must be None.
    total: Tensor | None = None


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
    defaults and are plain names; the calls the base class owns (`forward`, and a gradient-space method's
    `logs`) left to it; `weigh(losses, ctx)` / `aggregate(J, ctx)`, where the class defines it, with no
    default for ctx and, when annotated, returning `Weighting` / `Tensor`."""
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
    if cls.__module__ == __name__:  # LossMethod and GradientMethod themselves
        return
    # The base class's calls -> what to define instead.
    owned = {"forward": "weigh(losses, ctx) -> Weighting"} if kind == "loss" else \
        {"forward": "aggregate(J, ctx) -> g", "logs": "method_logs() (weight/<task> comes from applied_weights)"}
    for name, instead in owned.items():
        if name in vars(cls):
            raise TypeError(f"{where}: {name} belongs to the base class, define {instead} instead")
    call, first, returns = ("weigh", "losses", "Weighting") if kind == "loss" else ("aggregate", "J", "Tensor")
    if call not in vars(cls):
        return
    signature = inspect.signature(vars(cls)[call])
    params = list(signature.parameters.values())
    if len(params) != 3 or params[2].default is not inspect.Parameter.empty:
        raise TypeError(f"{where}: {call} takes (self, {first}, ctx) with no default for ctx (the step always "
                        f"passes a StepContext), got {call}{signature}")
    annotation = signature.return_annotation  # a string under `from __future__ import annotations`
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
    if annotation is not inspect.Signature.empty and name.rsplit(".", 1)[-1] != returns:
        raise TypeError(f"{where}: {call} must return {returns}, annotated {name}")


def check_implemented(cls: type) -> None:
    """Raise TypeError naming the class unless it implements its kind's call (`weigh` or `aggregate`);
    run by `register`, since an intermediate base class (AggregatorMethod) need not."""
    call = "weigh" if cls.kind == "loss" else "aggregate"
    if getattr(cls, call) is getattr(LossMethod if cls.kind == "loss" else GradientMethod, call):
        raise TypeError(f"method class {cls.__qualname__} ({cls.__module__}) does not define {call}")


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
        or a mapping task -> weight; detached. The one place the key is written."""
        if isinstance(weights, Mapping):
            return {f"weight/{t}": _detached(weights[t]) for t in self.tasks}
        return {f"weight/{t}": w for t, w in zip(self.tasks, weights.detach())}

    def check_losses(self, losses: dict[str, Tensor]) -> None:
        """Raise unless `losses` has exactly this method's tasks."""
        if set(losses) != set(self.tasks):
            raise ValueError(f"losses are for tasks {sorted(losses)} but the method was built for "
                             f"{sorted(self.tasks)}")


def _detached(w):
    return w.detach() if isinstance(w, Tensor) else w


def _no_weight_keys(method: Method, logs: dict) -> dict:
    """`logs`, unless it writes `weight/<task>` itself (the base class writes that key, once)."""
    bad = [k for k in logs if k.startswith("weight/")]
    if bad:
        raise ValueError(f"{type(method).__name__} logs {bad} itself; weight/<task> comes from the weights it "
                         "returns (Weighting.weights) or sets (applied_weights)")
    return logs


class LossMethod(Method):
    """Weighs the task losses (`weigh(losses, ctx) -> Weighting`); `forward(losses, ctx) -> (total, logs)`
    composes the one scalar to back-propagate and the logs."""

    kind = "loss"

    def weigh(self, losses: dict[str, Tensor], ctx: StepContext) -> Weighting:
        raise NotImplementedError

    def forward(self, losses: dict[str, Tensor], ctx: StepContext) -> tuple[Tensor, dict]:
        self.check_losses(losses)
        out = self.weigh(losses, ctx)
        if not isinstance(out, Weighting):
            raise TypeError(f"{type(self).__name__}.weigh must return a Weighting, got {type(out).__name__}")
        n = len(out.weights)
        if n != len(self.tasks) or (isinstance(out.weights, Mapping) and set(out.weights) != set(self.tasks)):
            raise ValueError(f"{type(self).__name__}.weigh returned {n} weights for the tasks {list(self.tasks)}")
        if out.total is not None:
            if out.extra is not None:
                raise ValueError(f"{type(self).__name__}.weigh returned both a total and an extra term")
            total = out.total
        else:
            total = self.compose(out, losses)
        return total, self.weight_logs(out.weights) | _no_weight_keys(self, out.logs)

    def compose(self, out: Weighting, losses: dict[str, Tensor]) -> Tensor:
        """sum_t w_t * L_t (+ e_t after each task's term, for a per-task extra) + extra, in `self.tasks` order."""
        weights, extra = out.weights, out.extra
        per_task = isinstance(extra, Mapping)
        total = 0.0
        for i, t in enumerate(self.tasks):
            total = total + (weights[t] if isinstance(weights, Mapping) else weights[i]) * losses[t].float()
            if per_task:
                total = total + extra[t]
        return total + extra if extra is not None and not per_task else total


class GradientMethod(Method):
    """Combines the rows of the task Jacobian into one gradient: `aggregate(J, ctx) -> g`."""

    kind = "gradient"
    Options: ClassVar[type] = GradientOptions
    # The weights w of the last `aggregate` where g = w @ J ((tasks,), detached), for `weight/<task>`; None
    # where the aggregation is no weighted sum of the rows (GradDrop's per-coordinate masks).
    applied_weights: Tensor | None = None

    def aggregate(self, J: Tensor, ctx: StepContext) -> Tensor:
        raise NotImplementedError

    def forward(self, J: Tensor, ctx: StepContext) -> Tensor:
        return self.aggregate(J, ctx)

    def logs(self) -> dict:
        """What to log about the last `aggregate` call: `weight/<task>` from `applied_weights`, then
        `method_logs()`."""
        w = self.applied_weights
        return ({} if w is None else self.weight_logs(w)) | _no_weight_keys(self, self.method_logs())

    def method_logs(self) -> dict:
        """The method's own logs about the last `aggregate` call, besides `weight/<task>` (default: none)."""
        return {}
