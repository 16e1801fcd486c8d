"""Loss weighting methods (DESIGN.md "Weighting" and decision 1).

A method is a small nn.Module: `forward(losses) -> (total, logs)`, where `losses` maps task
name to a scalar loss, `total` is the scalar to back-propagate and `logs` is a flat dict of
floats: `weight/<task>` (the effective multiplier on that task's loss) for every method, plus
whatever the method tracks (`sigma2/<task>`, `log_var/<task>` for uncertainty weighting).

Learnable parameters live on the weighting module, never on the network; the training loop
hands `weighting.parameters()` to the optimiser in their own group (no weight decay,
lr * weighting.lr_mult). Adding a method is one file with a `Weighting` subclass plus one line
in the registry of `losses/__init__.py`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

KINDS = ("classification", "regression")


class Weighting(nn.Module):
    """Base class: validates the task kinds and defines both entry points.

    Most methods combine the task losses into one scalar in `forward`. Methods that need the
    gradient of each task separately (GradNorm, PCGrad, MGDA, ...) set
    `requires_task_grads = True` and implement `backward(losses, shared_params)`, which
    back-propagates every task loss itself, writes the combined gradient into `.grad` of the
    shared parameters (and of the task-specific ones) and returns the logs; the training loop
    then calls it instead of `forward(...)` + `total.backward()`.
    """

    requires_task_grads: bool = False

    def __init__(self, tasks: dict[str, str]) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a weighting needs at least one task")
        bad = {t: k for t, k in tasks.items() if k not in KINDS}
        if bad:
            raise ValueError(f"unknown task kind(s) {bad}; valid kinds are {list(KINDS)}")
        self.tasks: dict[str, str] = dict(tasks)

    def check_losses(self, losses: dict[str, Tensor]) -> None:
        """Raise unless `losses` has exactly this weighting's tasks."""
        if set(losses) != set(self.tasks):
            raise ValueError(f"losses are for tasks {sorted(losses)} but the weighting was built for "
                             f"{sorted(self.tasks)}")

    def forward(self, losses: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def backward(self, losses: dict[str, Tensor], shared_params: list[nn.Parameter]) -> dict[str, float]:
        """Per-task-gradient entry point (only where `requires_task_grads`); returns the logs."""
        raise NotImplementedError(f"{type(self).__name__} combines losses in forward(); it has no backward()")


class FixedWeighting(Weighting):
    """Fixed weights: total = sum_t w_t * L_t (the paper's Figure 2 sweep and Table 1 baselines).

    Tasks absent from `weights` weigh 1. Single-task training is this method with the other
    tasks absent from the model; a weight for a task that is not trained is an error.
    """

    def __init__(self, tasks: dict[str, str], weights: dict[str, float] | None = None) -> None:
        super().__init__(tasks)
        weights = dict(weights or {})
        extra = [t for t in weights if t not in self.tasks]
        if extra:
            raise ValueError(f"weights given for task(s) {extra} that are not trained; trained tasks are "
                             f"{list(self.tasks)}")
        self.weights: dict[str, float] = {t: float(weights.get(t, 1.0)) for t in self.tasks}

    def forward(self, losses: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        self.check_losses(losses)
        total = sum(self.weights[t] * losses[t].float() for t in self.tasks)
        return total, {f"weight/{t}": w for t, w in self.weights.items()}


# Uncertainty forms, per task kind: the term is  a * exp(-s) * L + b * s  with s = log sigma^2,
# as (a, b). See UncertaintyWeighting's docstring for the equations.
FORMS: dict[str, dict[str, tuple[float, float]]] = {
    "eq10": {"classification": (1.0, 0.5), "regression": (0.5, 0.5)},
    "gal": {"classification": (1.0, 1.0), "regression": (1.0, 1.0)},
    "libmtl": {"classification": (0.5, 0.5), "regression": (0.5, 0.5)},
}
# Initial s when init_log_var is None.
DEFAULT_INIT: dict[str, float] = {"eq10": 0.0, "gal": 0.0, "libmtl": -0.5}


class UncertaintyWeighting(Weighting):
    """Homoscedastic uncertainty weighting, Kendall, Gal & Cipolla (2018), one s_t = log sigma_t^2 per task.

    form="eq10" (default) is the paper's Eq. 10 written in s (Eq. 7 for a regression task,
    Eq. 8-10 for a softmax classification task):
        classification:  exp(-s) * L + s / 2       (1/sigma^2 L + log sigma)
        regression:      exp(-s) / 2 * L + s / 2   (1/(2 sigma^2) L + log sigma)
    form="gal": exp(-s) * L + s for every task (the authors' public example code).
    form="libmtl": exp(-s) / 2 * L + s / 2 for every task, s0 = -0.5 (LibMTL / MTAN).
    init_log_var=None takes the form's default initial s (0, 0, -0.5). The logged weight is the
    multiplier on L (exp(-s) or exp(-s)/2) and sigma2 = exp(s).
    """

    def __init__(self, tasks: dict[str, str], form: str = "eq10", init_log_var: float | None = None) -> None:
        super().__init__(tasks)
        if form not in FORMS:
            raise ValueError(f"unknown uncertainty form {form!r}; valid forms are {sorted(FORMS)}")
        self.form = form
        s0 = DEFAULT_INIT[form] if init_log_var is None else float(init_log_var)
        if not math.isfinite(s0):
            raise ValueError(f"init_log_var must be finite, got {init_log_var}")
        self.coefs = {t: FORMS[form][kind] for t, kind in self.tasks.items()}
        self.log_vars = nn.ParameterDict(
            {t: nn.Parameter(torch.tensor(s0, dtype=torch.float32)) for t in self.tasks})

    def forward(self, losses: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        self.check_losses(losses)
        total = 0.0
        weights = {}
        for t in self.tasks:
            a, b = self.coefs[t]
            s = self.log_vars[t]
            weights[t] = a * torch.exp(-s)  # the multiplier on L_t
            total = total + weights[t] * losses[t].float() + b * s
        # One device-to-host copy for all the logged numbers.
        values = torch.stack([v for t in self.tasks for v in (weights[t], self.log_vars[t].exp(), self.log_vars[t])])
        values = values.detach().tolist()
        logs = {}
        for i, t in enumerate(self.tasks):
            logs[f"weight/{t}"], logs[f"sigma2/{t}"], logs[f"log_var/{t}"] = values[3 * i: 3 * i + 3]
        return total, logs
