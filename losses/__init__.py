"""Task losses and loss weighting: `task_losses`, the `WEIGHTINGS` registry and `build_weighting`."""

from __future__ import annotations

import dataclasses
import inspect

from config import Config, WeightingConfig
from losses.tasks import TASK_LOSSES, task_losses
from losses.weighting import FixedWeighting, UncertaintyWeighting, Weighting
from tasks import TASK_KINDS

__all__ = ["TASK_LOSSES", "WEIGHTINGS", "Weighting", "build_weighting", "build_weighting_from_config",
           "task_losses"]

# name -> Weighting subclass; a new method is one file plus one line here.
WEIGHTINGS: dict[str, type[Weighting]] = {
    "fixed": FixedWeighting,
    "uncertainty": UncertaintyWeighting,
}


def weighting_options(name: str) -> list[str]:
    """The keyword options accepted by weighting method `name` (besides `tasks`)."""
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; valid weightings are {sorted(WEIGHTINGS)}")
    params = inspect.signature(WEIGHTINGS[name].__init__).parameters
    return [p for p in params if p not in ("self", "tasks")]


def build_weighting(name: str, tasks: dict[str, str], **options) -> Weighting:
    """Build weighting method `name` for `tasks` (task -> "classification" | "regression")."""
    valid = weighting_options(name)
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for weighting {name!r}; valid options are {valid}")
    return WEIGHTINGS[name](tasks, **options)


def build_weighting_from_config(cfg: Config) -> Weighting:
    """Build `cfg.weighting.name` for `cfg.tasks`, passing the `cfg.weighting` fields it accepts.

    A field the method does not take must keep its default value (e.g. `weighting.weights` with
    `weighting.name=uncertainty` is an error, not silently ignored). `lr_mult` is for the optimiser.
    """
    w = cfg.weighting
    valid = weighting_options(w.name)
    defaults = WeightingConfig()
    options, ignored = {}, []
    for f in dataclasses.fields(w):
        if f.name in ("name", "lr_mult"):
            continue
        value = getattr(w, f.name)
        if f.name in valid:
            options[f.name] = value
        elif value != getattr(defaults, f.name):
            ignored.append(f"weighting.{f.name}")
    if ignored:
        raise ValueError(f"{ignored} set but weighting {w.name!r} does not use it; its options are {valid}")
    return build_weighting(w.name, {t: TASK_KINDS[t] for t in cfg.tasks}, **options)
