"""`MultiTaskMetrics`: one dataset-level accumulator per task (see tasks/accumulators.py).

Keys of `compute()` (only for the tasks that were updated): `semantic/miou`, `semantic/iou/<class>`,
`semantic/pixel_acc` (percent); `instance/mean_error_px` (mean |dx|+|dy| over instance pixels);
`depth/mean_error_px`, `depth/rmse_px` (over `depth_mask`). A regression metric whose mask was
empty over the whole split is NaN, as is the IoU of a class with union 0 (left out of the mean).
"""

from __future__ import annotations

import torch

import tasks
from tasks.labels import NUM_CLASSES


class MultiTaskMetrics:
    """The accumulators of every task in tasks.TASK_SPECS, updated from dicts keyed by task name."""

    def __init__(self, num_classes: int = NUM_CLASSES, class_names: tuple[str, ...] | None = None):
        if class_names is None and num_classes != NUM_CLASSES:
            raise ValueError(f"num_classes={num_classes} differs from the label table ({NUM_CLASSES}): "
                             "pass class_names")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.accumulators = {}
        for name, spec in tasks.TASK_SPECS.items():
            custom = class_names is not None and spec.kind == "classification"
            self.accumulators[name] = spec.accumulator(class_names=tuple(class_names)) if custom \
                else spec.accumulator()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        for acc in self.accumulators.values():
            acc.reset()

    @torch.no_grad()
    def update(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
        """Add one batch. Only the tasks present in `outputs` are scored.

        `outputs["semantic"]` is (B,C,H,W) logits (argmax is taken) or an integer (B,H,W) map of
        trainIds; the other entries are the model's outputs at the resolution of `batch`.
        """
        if not outputs:
            raise ValueError("outputs is empty: nothing to score")
        for task, pred in outputs.items():
            if task not in self.accumulators:
                raise KeyError(f"unknown task '{task}' in outputs; valid tasks are {list(self.accumulators)}")
            self.accumulators[task].update(pred, batch)

    def all_reduce(self) -> None:
        """Sum the accumulators over all torch.distributed processes; a no-op when not distributed."""
        for acc in self.accumulators.values():
            acc.all_reduce()

    def compute(self) -> dict[str, float]:
        """The metrics of the tasks seen so far, as plain floats."""
        out: dict[str, float] = {}
        for acc in self.accumulators.values():
            out |= acc.compute()
        return out
