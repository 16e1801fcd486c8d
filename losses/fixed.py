"""Fixed task weights: total = sum_t w_t * L_t (the paper's Figure 2 sweep and Table 1 baselines)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor

import tasks as task_registry  # (the name `tasks` is a parameter below)
from losses.base import LossMethod, StepContext, Weighting
from losses.registry import register


@dataclass
class FixedOptions:
    weights: dict[str, float] = field(default_factory=dict)  # task -> weight; a trained task not named weighs 1

    def __post_init__(self) -> None:
        unknown = [t for t in self.weights if t not in task_registry.ALL_TASKS]
        if unknown:
            raise ValueError(f"weights name unknown task(s) {unknown}; valid tasks are {list(task_registry.ALL_TASKS)}")
        # A negative weight would ascend that task's loss.
        bad = {t: w for t, w in self.weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"fixed weights must be finite and >= 0, got {bad}")


@register("fixed", order=10)
class FixedWeighting(LossMethod):
    """total = sum_t w_t * L_t with constant weights.

    Tasks absent from `weights` weigh 1. Single-task training is this method with the other tasks
    absent from the model; a weight for a task that is not trained is an error, and so is a negative
    or non-finite weight.
    """

    Options = FixedOptions

    def __init__(self, tasks: dict[str, str], options: FixedOptions | None = None) -> None:
        super().__init__(tasks, options)
        weights = dict(self.options.weights)
        extra = [t for t in weights if t not in self.tasks]
        if extra:
            raise ValueError(f"weights given for task(s) {extra} that are not trained; trained tasks are "
                             f"{list(self.tasks)}")
        self.weights: dict[str, float] = {t: float(weights.get(t, 1.0)) for t in self.tasks}
        if not any(self.weights.values()):  # the total loss would be 0: a model that learns nothing
            raise ValueError(f"every trained task weighs 0 ({self.weights}): nothing would be learned; give at "
                             "least one task a positive weight")

    @classmethod
    def describe(cls, name: str, options: FixedOptions, tasks: tuple[str, ...]) -> str:
        return "fixed " + " / ".join(f"{options.weights.get(t, 1.0):.3g}" for t in tasks)

    def weigh(self, losses: dict[str, Tensor], ctx: StepContext) -> Weighting:
        return Weighting(self.weights)
