"""Per-task losses (DESIGN.md "Losses"), computed in float32 whatever the autocast dtype.

Each loss is a mean over the task's valid pixels in the whole batch. A batch without any valid
pixel for a task gives exactly 0, still connected to the graph (zero gradient), never NaN: the
sums are divided by max(count, 1), which also avoids a host-device sync.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from data.labels import IGNORE_INDEX


def _check_shape(task: str, pred: Tensor, target: Tensor, want: tuple[int, ...]) -> None:
    if tuple(target.shape) != want:
        raise ValueError(f"{task}: target shape {tuple(target.shape)} does not fit prediction "
                         f"{tuple(pred.shape)} (expected {want})")


def cross_entropy_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy over pixels whose target is not IGNORE_INDEX (255); 0 if there are none."""
    # logits (B, K, H, W), target (B, H, W) int64 in 0..K-1 or 255
    _check_shape("semantic", logits, target, (logits.shape[0], *logits.shape[2:]))
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (target != IGNORE_INDEX).sum()
    return total / count.clamp(min=1)


def masked_l1_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over masked pixels of the L1 norm over channels, sum_c |pred - target|; 0 if none."""
    # pred, target (B, C, H, W); mask (B, H, W) bool
    _check_shape("regression", pred, target, tuple(pred.shape))
    _check_shape("mask", pred, mask, (pred.shape[0], *pred.shape[2:]))
    mask = mask.bool()
    err = (pred.float() - target.float()).abs().sum(dim=1)  # (B, H, W)
    # where() rather than a product: an inf/NaN outside the mask must not leak into the loss.
    total = torch.where(mask, err, torch.zeros_like(err)).sum()
    return total / mask.sum().clamp(min=1)


def semantic_loss(pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """Cross-entropy of the class logits against `batch["semantic"]`, ignore 255."""
    return cross_entropy_loss(pred, batch["semantic"])


def instance_loss(pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """Mean |dx| + |dy| over `batch["instance_mask"]` (the paper's L1 norm of the vector error)."""
    return masked_l1_loss(pred, batch["instance"], batch["instance_mask"])


def depth_loss(pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """Mean absolute inverse-depth error over `batch["depth_mask"]`."""
    return masked_l1_loss(pred, batch["depth"], batch["depth_mask"])


TASK_LOSSES: dict[str, Callable[[Tensor, dict[str, Tensor]], Tensor]] = {
    "semantic": semantic_loss,
    "instance": instance_loss,
    "depth": depth_loss,
}

# Batch keys each loss reads, to name a missing one clearly.
_TARGET_KEYS: dict[str, tuple[str, ...]] = {
    "semantic": ("semantic",),
    "instance": ("instance", "instance_mask"),
    "depth": ("depth", "depth_mask"),
}


def task_losses(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The scalar float32 loss of every task present in `outputs`, keyed by task name."""
    losses = {}
    for task, pred in outputs.items():
        if task not in TASK_LOSSES:
            raise ValueError(f"no loss for task {task!r}; valid tasks are {list(TASK_LOSSES)}")
        missing = [k for k in _TARGET_KEYS[task] if k not in batch]
        if missing:
            raise KeyError(f"{task} loss: batch has no {missing}; batch keys are {sorted(batch)}")
        losses[task] = TASK_LOSSES[task](pred, batch)
    return losses
