"""Dense per-pixel losses, computed in float32 whatever the autocast dtype (docs/design.md "Losses").

Each loss is a mean over the valid pixels of the whole batch. A batch without any valid pixel
gives exactly 0, still connected to the graph (zero gradient), never NaN: the sums are divided by
max(count, 1), which also avoids a host-device sync. Which task uses which loss, and which sample
keys it reads, is said once in tasks/specs.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tasks.labels import IGNORE_INDEX


def _check_shape(what: str, pred: Tensor, target: Tensor, want: tuple[int, ...]) -> None:
    if tuple(target.shape) != want:
        raise ValueError(f"{what}: target shape {tuple(target.shape)} does not fit prediction "
                         f"{tuple(pred.shape)} (expected {want})")


def cross_entropy_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy over pixels whose target is not IGNORE_INDEX (255); 0 if there are none."""
    # logits (B, K, H, W), target (B, H, W) int64 in 0..K-1 or 255
    _check_shape("cross-entropy", logits, target, (logits.shape[0], *logits.shape[2:]))
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (target != IGNORE_INDEX).sum()
    return total / count.clamp(min=1)


def masked_l1_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over masked pixels of the L1 norm over channels, sum_c |pred - target|; 0 if none."""
    # pred, target (B, C, H, W); mask (B, H, W) bool
    _check_shape("L1", pred, target, tuple(pred.shape))
    _check_shape("L1 mask", pred, mask, (pred.shape[0], *pred.shape[2:]))
    mask = mask.bool()
    err = (pred.float() - target.float()).abs().sum(dim=1)  # (B, H, W)
    # where() rather than a product: an inf/NaN outside the mask must not leak into the loss.
    total = torch.where(mask, err, torch.zeros_like(err)).sum()
    return total / mask.sum().clamp(min=1)
