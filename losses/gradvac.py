"""GradVac: Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task Optimization in
Massively Multilingual Models" (ICLR 2021), by TorchJD (torchjd.aggregation.GradVac).

Like PCGrad, but each task gradient is moved towards the other until their cosine reaches an
exponential moving average (rate `beta`) of the cosines seen so far, not merely zero. The other tasks
are visited in a random order from torch's generator (seeded by the step from (seed, step)); the
moving averages are buffers, saved with the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register


@dataclass
class GradVacOptions(GradientOptions):
    beta: float = 0.5  # EMA rate of the target cosines (TorchJD's default)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.beta) and 0 <= self.beta <= 1):
            raise ValueError(f"GradVac beta must be in [0, 1], got {self.beta}")


@register("gradvac", order=110)
class GradVac(AggregatorMethod):
    """PCGrad towards the moving-average cosine of every pair of tasks."""

    Options = GradVacOptions

    def __init__(self, tasks: dict[str, str], options: GradVacOptions | None = None) -> None:
        from torchjd.aggregation import GradVac as TorchJDGradVac  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.aggregator = TorchJDGradVac(beta=self.options.beta)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # TorchJD creates the moving averages (a CPU buffer) at the first call: create them before a
        # checkpoint's values are copied in, so a resumed run continues from them.
        key = prefix + "aggregator.gramian_weighting._phi_t"
        if key in state_dict:
            self.aggregator.gramian_weighting._ensure_state(len(self.tasks), state_dict[key].dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
