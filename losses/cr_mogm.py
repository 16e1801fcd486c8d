"""CR-MOGM: Zhou et al., "On the Convergence of Stochastic Multi-Objective Gradient Manipulation and
Beyond" (NeurIPS 2022), its correlation-reduced (moving-average) weights, by TorchJD
(torchjd.aggregation.CRMOGMWeighting) around a Gramian weighting (`base`, default MGDA).

With w^_t the base method's weights for this step's J,
    w_t = alpha w_{t-1} + (1 - alpha) w^_t,    g = J^T w_t,
w_0 = w^_1 (the first step is the base method's): a moving average of the weights that reduces their
correlation with the stochastic gradients, which is what makes stochastic MGDA-type methods converge.
alpha is constant here (the paper's Corollary 1 raises it towards 1 as the learning rate decays). The
averaged weights are saved with the run. The base solver's non-finite weights are counted as failures.
"""

from __future__ import annotations

from dataclasses import dataclass

from losses.registry import register
from losses.torchjd_state import SolverOptions, TorchJDStateMethod

# the bases by name: their TorchJD weighting classes (torchjd.aggregation), imported when a method is built
BASES = {"mgda": "MGDAWeighting", "upgrad": "UPGradWeighting", "imtl-g": "IMTLGWeighting",
         "dualproj": "DualProjWeighting"}


@dataclass
class CRMOGMOptions(SolverOptions):
    base: str = "mgda"  # the weighting whose weights are averaged: mgda | upgrad | imtl-g | dualproj
    alpha: float = 0.9  # weight of the previous average (0: the base method itself)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.base not in BASES:
            raise ValueError(f"unknown CR-MOGM base {self.base!r}; valid bases are {sorted(BASES)}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"CR-MOGM alpha must be in [0, 1], got {self.alpha}")


@register("cr-mogm", order=230)
class CRMOGM(TorchJDStateMethod):
    """A moving average of a gradient-manipulation method's task weights."""

    Options = CRMOGMOptions
    state_names = ("_lambda",)
    log_prefix = "cr_mogm"

    def __init__(self, tasks: dict[str, str], options: CRMOGMOptions | None = None) -> None:
        from torchjd.aggregation import CRMOGMWeighting, GramianWeightedAggregator  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        import torchjd.aggregation

        base = getattr(torchjd.aggregation, BASES[self.options.base])
        weighting = CRMOGMWeighting(base(), alpha=self.options.alpha)
        self.use(GramianWeightedAggregator(weighting), weighting)
