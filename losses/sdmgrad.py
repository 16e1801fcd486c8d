"""SDMGrad: Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
Algorithms" (NeurIPS 2023), Algorithm 1, by TorchJD (torchjd.aggregation.SDMGradWeighting).

The weights w on the simplex take `n_iter` projected SGD steps (momentum) on
    1/2 || J^T (w + lambda w~) ||^2,   gradient  A (w + lambda w~),   A = J_1 J_2^T / s^2,
s = mean_k sqrt(A_kk) (scale normalisation, as in the authors' code and LibMTL), w~ = uniform; then
    g = J^T (w + lambda w~) / (1 + lambda),
so lambda -> 0 is (stochastic) MGDA and lambda -> inf the mean gradient. w is carried across steps.

Double sampling: A needs J_1, J_2 from two independent mini-batches, and the update a third. This
codebase's step computes one J per step, so J_1 is the previous step's J (an independent batch, one
optimiser step earlier), J_2 and the update use this step's J; at the first step, or with
`sampling: same`, A = J J^T. `sampling: previous` needs `space: parameters` and keeps one extra J in
memory and in the checkpoint. Defaults are TorchJD's (lr 10, momentum 0.5, 20 iterations, lambda 0.3;
LibMTL uses lr 5). The projected iterations have no solver to fail; non-finite weights are counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from losses.registry import register
from losses.torchjd_state import DoubleSampledMethod, DoubleSamplingOptions


@dataclass
class SDMGradOptions(DoubleSamplingOptions):
    lamda: float = 0.3  # pull towards the mean gradient (the paper's lambda; the authors' experiments)
    lr: float = 10.0  # inner SGD step size on w
    momentum: float = 0.5
    n_iter: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.lamda) and self.lamda >= 0):
            raise ValueError(f"SDMGrad lamda must be finite and >= 0, got {self.lamda}")
        if not (math.isfinite(self.lr) and self.lr > 0) or not 0 <= self.momentum < 1 or self.n_iter < 1:
            raise ValueError("SDMGrad needs lr > 0, 0 <= momentum < 1 and n_iter >= 1")


@register("sdmgrad", order=190)
class SDMGrad(DoubleSampledMethod):
    """A direction between stochastic MGDA and the mean gradient."""

    Options = SDMGradOptions
    state_names = ("_w",)
    log_prefix = "sdmgrad"

    def __init__(self, tasks: dict[str, str], options: SDMGradOptions | None = None) -> None:
        from torchjd.aggregation import SDMGradWeighting, WeightedAggregator  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        o = self.options
        weighting = SDMGradWeighting(lr=o.lr, momentum=o.momentum, n_iter=o.n_iter, lambda_=o.lamda)
        self.use(WeightedAggregator(weighting), weighting)

    def state_key(self, J):
        return (J.shape[0], J.dtype, J.device)
