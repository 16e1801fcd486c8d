"""The three tasks of Kendall et al. (2018), described once for the whole project.

Every sample, model output, loss, weight and metric is a dict keyed by task name. A `TaskSpec`
says everything the rest of the code needs about a task: its likelihood kind (which decides the
uncertainty-weighting form of Eq. 10), the head's output channels, the sample keys its loss and
metric read, the loss, the metric accumulator, how its outputs rescale when resized, and the
names and units of its headline metrics. Heads, losses, metrics, evaluation, plots and the
experiment tables all read `TASK_SPECS`; none of them names a task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import Tensor

from tasks.accumulators import Accumulator, ConfusionMatrix, DepthError, RegressionError
from tasks.labels import CLASS_NAMES, NUM_CLASSES
from tasks.losses import cross_entropy_loss, masked_l1_loss

__all__ = ["ALL_TASKS", "KINDS", "METRICS", "SEG7_CLASS_NAMES", "TASKS", "TASK_KINDS", "TASK_SPECS", "MetricSpec",
           "TaskSpec", "check_tasks"]

# How a task's likelihood is modelled (each TaskSpec has one): decides e.g. the uncertainty form.
KINDS = ("classification", "regression")


@dataclass(frozen=True)
class MetricSpec:
    """A metric as tables and plots show it."""

    key: str  # as in MultiTaskMetrics.compute(), e.g. "semantic/miou"
    label: str  # e.g. "semantic mIoU"
    unit: str  # e.g. "%", "px"
    digits: int  # decimals shown in tables
    higher_is_better: bool

    @property
    def title(self) -> str:
        return f"{self.label} ({self.unit})"

    @property
    def task(self) -> str:
        return self.key.split("/", 1)[0]


@dataclass(frozen=True)
class TaskSpec:
    """One task: what the model predicts, how it is trained and how it is scored."""

    name: str
    kind: str  # "classification" | "regression"
    display: str  # e.g. "semantic segmentation"
    channels: int  # output channels of the task's head
    targets: tuple[str, ...]  # sample keys the loss takes after the prediction, in order
    loss: Callable[..., Tensor]  # loss(pred, *[batch[k] for k in targets]) -> scalar
    # A fresh dataset-level metric accumulator; a classification one also takes `class_names=`.
    accumulator: Callable[..., Accumulator]
    # Per output channel, the image axis its values are measured along ("x", "y") or None: resizing
    # an output from W_in to W_out pixels multiplies the "x" channels by W_out / W_in.
    pixel_axes: tuple[str | None, ...]
    metrics: tuple[MetricSpec, ...]  # headline metrics (the paper's columns), best first

    def loss_of(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """This task's scalar loss; a missing target key is named."""
        missing = [k for k in self.targets if k not in batch]
        if missing:
            raise KeyError(f"{self.name} loss: batch has no {missing}; batch keys are {sorted(batch)}")
        try:
            return self.loss(pred, *(batch[k] for k in self.targets))
        except ValueError as e:
            raise ValueError(f"{self.name}: {e}") from e


TASK_SPECS: dict[str, TaskSpec] = {
    "semantic": TaskSpec(
        name="semantic", kind="classification", display="semantic segmentation", channels=NUM_CLASSES,
        targets=("semantic",), loss=cross_entropy_loss,
        accumulator=partial(ConfusionMatrix, task="semantic", target="semantic", class_names=CLASS_NAMES),
        pixel_axes=(None,) * NUM_CLASSES,
        metrics=(MetricSpec("semantic/miou", "semantic mIoU", "%", 2, True),
                 MetricSpec("semantic/pixel_acc", "semantic pixel accuracy", "%", 2, True))),
    "instance": TaskSpec(
        name="instance", kind="regression", display="instance centroid vectors", channels=2,
        targets=("instance", "instance_mask"), loss=masked_l1_loss,
        accumulator=partial(RegressionError, task="instance", target="instance", mask="instance_mask"),
        pixel_axes=("x", "y"),
        metrics=(MetricSpec("instance/mean_error_px", "instance mean error", "px", 3, False),)),
    "depth": TaskSpec(
        name="depth", kind="regression", display="inverse depth (disparity)", channels=1,
        targets=("depth", "depth_mask"), loss=masked_l1_loss,
        accumulator=partial(RegressionError, task="depth", target="depth", mask="depth_mask", rmse=True),
        pixel_axes=("x",),
        metrics=(MetricSpec("depth/mean_error_px", "depth mean error", "px", 3, False),
                 MetricSpec("depth/rmse_px", "depth RMSE", "px", 3, False))),
}

# The 2-task Cityscapes protocol of nash-mtl / FAMO / LibMTL (docs/protocols.md): the preprocessed npy layout's
# 7-class segmentation and depth, with its own sample keys (data/npy.py) and the papers' metrics.
SEG7_CLASS_NAMES: tuple[str, ...] = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
PROTOCOL_TASK_SPECS: dict[str, TaskSpec] = {
    "seg7": TaskSpec(
        name="seg7", kind="classification", display="7-class segmentation", channels=len(SEG7_CLASS_NAMES),
        targets=("seg7",), loss=cross_entropy_loss,
        accumulator=partial(ConfusionMatrix, task="seg7", target="seg7", class_names=SEG7_CLASS_NAMES),
        pixel_axes=(None,) * len(SEG7_CLASS_NAMES),
        metrics=(MetricSpec("seg7/miou", "7-class mIoU", "%", 2, True),
                 MetricSpec("seg7/pixel_acc", "7-class pixel accuracy", "%", 2, True))),
    "depth_abs": TaskSpec(
        name="depth_abs", kind="regression", display="depth (npy layout)", channels=1,
        targets=("depth_abs", "depth_abs_mask"), loss=masked_l1_loss,
        accumulator=partial(DepthError, task="depth_abs", target="depth_abs", mask="depth_abs_mask"),
        pixel_axes=(None,),  # the layout's units, not pixels of the image grid
        metrics=(MetricSpec("depth_abs/abs_err", "depth abs. error", "file units", 4, False),
                 MetricSpec("depth_abs/rel_err", "depth rel. error", "ratio", 4, False))),
}
# The paper's three tasks stay the default task list (Config.tasks; existing identities are unchanged);
# every registered task, protocol tasks included, is in TASK_SPECS and ALL_TASKS.
TASKS: tuple[str, ...] = tuple(TASK_SPECS)
TASK_SPECS.update(PROTOCOL_TASK_SPECS)
ALL_TASKS: tuple[str, ...] = tuple(TASK_SPECS)
TASK_KINDS: dict[str, str] = {t: s.kind for t, s in TASK_SPECS.items()}
METRICS: dict[str, MetricSpec] = {m.key: m for s in TASK_SPECS.values() for m in s.metrics}


def check_tasks(tasks) -> tuple[str, ...]:
    """Return `tasks` as a tuple in canonical order, or raise naming the unknown ones."""
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASK_SPECS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid tasks are {list(ALL_TASKS)}")
    if not tasks:
        raise ValueError(f"at least one task is needed; valid tasks are {list(ALL_TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"task(s) listed twice in {list(tasks)}")
    return tuple(t for t in ALL_TASKS if t in tasks)
