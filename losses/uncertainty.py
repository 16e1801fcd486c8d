"""Homoscedastic uncertainty weighting: Kendall, Gal & Cipolla (2018), Eq. 10 (docs/design.md decision 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from losses.base import LossMethod, StepContext, Weighting
from losses.registry import register

# Uncertainty forms, per task kind: the term is  a * exp(-s) * L + b * s  with s = log sigma^2, as (a, b).
FORMS: dict[str, dict[str, tuple[float, float]]] = {
    "eq10": {"classification": (1.0, 0.5), "regression": (0.5, 0.5)},
    "gal": {"classification": (1.0, 1.0), "regression": (1.0, 1.0)},
    "libmtl": {"classification": (0.5, 0.5), "regression": (0.5, 0.5)},
}
# Initial s when init_log_var is None.
DEFAULT_INIT: dict[str, float] = {"eq10": 0.0, "gal": 0.0, "libmtl": -0.5}


@dataclass
class UncertaintyOptions:
    form: str = "eq10"  # eq10 | gal | libmtl
    init_log_var: float | None = None  # initial s = log sigma^2; None takes the form's default

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"unknown uncertainty form {self.form!r}; valid forms are {sorted(FORMS)}")
        if self.init_log_var is not None and not math.isfinite(self.init_log_var):
            raise ValueError(f"init_log_var must be finite, got {self.init_log_var}")


@register("uncertainty", order=20)
class UncertaintyWeighting(LossMethod):
    """One learned s_t = log sigma_t^2 per task.

    form="eq10" (default) is the paper's Eq. 10 written in s (Eq. 7 for a regression task,
    Eq. 8-10 for a softmax classification task):
        classification:  exp(-s) * L + s / 2       (1/sigma^2 L + log sigma)
        regression:      exp(-s) / 2 * L + s / 2   (1/(2 sigma^2) L + log sigma)
    form="gal": exp(-s) * L + s for every task (the authors' public example code).
    form="libmtl": exp(-s) / 2 * L + s / 2 for every task, s0 = -0.5 (LibMTL / MTAN).
    The logged weight is the multiplier on L (exp(-s) or exp(-s)/2) and sigma2 = exp(s). The
    log-variances are parameters of this module (never of the network) and are not weight-decayed.
    """

    Options = UncertaintyOptions

    def __init__(self, tasks: dict[str, str], options: UncertaintyOptions | None = None) -> None:
        super().__init__(tasks, options)
        form, s0 = self.options.form, self.options.init_log_var
        s0 = DEFAULT_INIT[form] if s0 is None else float(s0)
        self.coefs = {t: FORMS[form][kind] for t, kind in self.tasks.items()}
        self.log_vars = nn.ParameterDict(
            {t: nn.Parameter(torch.tensor(s0, dtype=torch.float32)) for t in self.tasks})

    def weigh(self, losses: dict[str, Tensor], ctx: StepContext) -> Weighting:
        weights, regularisers, logs = {}, {}, {}
        for t in self.tasks:
            a, b = self.coefs[t]
            s = self.log_vars[t]
            weights[t] = a * torch.exp(-s)  # the multiplier on L_t (s learns through it)
            regularisers[t] = b * s  # the extra term: total = sum_t (w_t L_t + b s_t)
            logs[f"sigma2/{t}"], logs[f"log_var/{t}"] = s.detach().exp(), s.detach().clone()
        return Weighting(weights, extra=regularisers, logs=logs)
