"""Aligned-MTL: Senushkin et al., "Independent Component Alignment for Multi-Task Learning" (CVPR 2023),
by TorchJD (torchjd.aggregation.AlignedMTL).

The task gradients are replaced by the orthogonal, equal-norm system closest to them (from the
eigendecomposition of the Gramian J J^T), scaled by the smallest singular value (`scale_mode: min`,
the paper's), then averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

from losses.aggregator import AggregatorMethod
from losses.base import GradientOptions
from losses.registry import register

SCALE_MODES = ("min", "median", "rmse")


@dataclass
class AlignedMTLOptions(GradientOptions):
    scale_mode: str = "min"  # min | median | rmse: which singular value scales the aligned system

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale_mode not in SCALE_MODES:
            raise ValueError(f"scale_mode must be one of {list(SCALE_MODES)}, got {self.scale_mode!r}")


@register("aligned-mtl", order=70)
class AlignedMTL(AggregatorMethod):
    """The mean of the aligned (orthogonalised, equal-norm) task gradients."""

    Options = AlignedMTLOptions

    def __init__(self, tasks: dict[str, str], options: AlignedMTLOptions | None = None) -> None:
        from torchjd.aggregation import AlignedMTL as TorchJDAlignedMTL  # lazy: torchjd loads cvxpy
        super().__init__(tasks, options)
        self.aggregator = TorchJDAlignedMTL(scale_mode=self.options.scale_mode)
