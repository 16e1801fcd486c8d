"""Task losses and multi-task methods: `task_losses`, the `METHODS` registry and `build_weighting`.

A method is one file in this package: its class, registered with `@register("name")`
(losses/registry.py), and its options dataclass. This package imports all its modules when it is
imported, so adding a method edits no other file; losses/base.py describes the two kinds
(loss-space and gradient-space) and the contract checked when a method class is defined.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

from torch import Tensor

import tasks
from losses.base import GradientMethod, LossMethod, Method, StepContext, Weighting
from losses.registry import METHODS, register

__all__ = ["METHODS", "GradientMethod", "LossMethod", "Method", "StepContext", "Weighting", "build_method",
           "build_weighting", "method_class", "method_lines", "register", "task_losses"]

# Every module of the package, so that each method file's @register runs (not __main__: the CLI).
for _module in pkgutil.iter_modules(__path__):
    if _module.name != "__main__" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def method_lines() -> list[str]:
    """One line per registered method: name, kind and options with their defaults."""
    lines = []
    for name, cls in METHODS.items():
        options = ", ".join(f"{f.name}={getattr(cls.Options(), f.name)!r}" for f in dataclasses.fields(cls.Options))
        lines.append(f"{name:<16} {cls.kind}-space  {options or '(no options)'}")
    return lines


def method_class(name: str) -> type[Method]:
    """The registered class of method `name`, or an error listing the valid names."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods are {sorted(METHODS)}")
    return METHODS[name]


def make_options(name: str, **options):
    """Method `name`'s options dataclass from keyword values; unknown names are an error listing the valid ones."""
    cls = method_class(name).Options
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {name!r}; valid options are {valid}")
    return cls(**options)


def build_method(name: str, tasks: dict[str, str], **options) -> Method:
    """Build method `name` for `tasks` (task -> "classification" | "regression") with keyword options."""
    return method_class(name)(tasks, make_options(name, **options))


build_weighting = build_method  # the older name


def task_losses(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The scalar float32 loss of every task present in `outputs`, keyed by task name."""
    losses = {}
    for task, pred in outputs.items():
        if task not in tasks.TASK_SPECS:
            raise ValueError(f"no loss for task {task!r}; valid tasks are {list(tasks.TASK_SPECS)}")
        losses[task] = tasks.TASK_SPECS[task].loss_of(pred, batch)
    return losses
