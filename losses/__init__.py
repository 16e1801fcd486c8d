"""Task losses and multi-task methods: `task_losses`, the `METHODS` registry and `build_weighting`.

A method is one file in this package (its class and its options dataclass) plus one line in
`METHODS` below; losses/base.py describes the two kinds (loss-space and gradient-space).
"""

from __future__ import annotations

import dataclasses

from torch import Tensor

import tasks
from losses.aligned_mtl import AlignedMTL
from losses.auto_lambda import AutoLambda
from losses.base import GradientMethod, LossMethod, Method, StepContext
from losses.cagrad import CAGrad
from losses.conflict_free import ConFIG
from losses.cr_mogm import CRMOGM
from losses.db_mtl import DBMTL
from losses.dualproj import DualProj
from losses.dwa import DWA
from losses.excess_mtl import ExcessMTL
from losses.fairgrad import FairGrad
from losses.famo import FAMO
from losses.fixed import FixedWeighting
from losses.gls import GLS
from losses.graddrop import GradDrop
from losses.gradient_mean import GradientMean
from losses.gradnorm import GradNorm
from losses.gradvac import GradVac
from losses.imtl_g import IMTLG
from losses.imtl_l import IMTLL
from losses.mgda import MGDA, MGDAUB
from losses.moco import MoCo
from losses.modo import MoDo
from losses.nash_mtl import NashMTL
from losses.pcd import PCD
from losses.pcgrad import PCGrad
from losses.rgw import RGW
from losses.rlw import RLW
from losses.scale_invariant import ScaleInvariant
from losses.sdmgrad import SDMGrad
from losses.stch import STCH
from losses.uncertainty import UncertaintyWeighting
from losses.upgrad import UPGrad

__all__ = ["METHODS", "GradientMethod", "LossMethod", "Method", "StepContext", "build_weighting",
           "method_class", "method_lines", "task_losses"]

# name -> method class; a new method is one file plus one line here.
METHODS: dict[str, type[Method]] = {
    # loss-space
    "fixed": FixedWeighting,
    "uncertainty": UncertaintyWeighting,
    "dwa": DWA,
    "rlw": RLW,
    "gls": GLS,
    "scale-invariant": ScaleInvariant,
    "imtl-l": IMTLL,
    "famo": FAMO,
    "gradnorm": GradNorm,
    "stch": STCH,
    # gradient-space
    "gradient-mean": GradientMean,
    "pcgrad": PCGrad,
    "mgda": MGDA,
    "mgda-ub": MGDAUB,
    "cagrad": CAGrad,
    "imtl-g": IMTLG,
    "aligned-mtl": AlignedMTL,
    "nash-mtl": NashMTL,
    "upgrad": UPGrad,
    "graddrop": GradDrop,
    "gradvac": GradVac,
    "dualproj": DualProj,
    "config": ConFIG,
    "fairgrad": FairGrad,
    "db-mtl": DBMTL,
    "excess-mtl": ExcessMTL,
    "pcd": PCD,
    "moco": MoCo,
    "sdmgrad": SDMGrad,
    "modo": MoDo,
    "auto-lambda": AutoLambda,
    "rgw": RGW,
    "cr-mogm": CRMOGM,
}


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


def build_weighting(name: str, tasks: dict[str, str], **options) -> Method:
    """Build method `name` for `tasks` (task -> "classification" | "regression") with keyword options."""
    return method_class(name)(tasks, make_options(name, **options))


def task_losses(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The scalar float32 loss of every task present in `outputs`, keyed by task name."""
    losses = {}
    for task, pred in outputs.items():
        if task not in tasks.TASK_SPECS:
            raise ValueError(f"no loss for task {task!r}; valid tasks are {list(tasks.TASK_SPECS)}")
        losses[task] = tasks.TASK_SPECS[task].loss_of(pred, batch)
    return losses
