"""Dataset-level metrics for the three tasks, accumulated over a whole split.

Semantic segmentation keeps one confusion matrix (int64, built with `torch.bincount` on the
outputs' device); the regression tasks keep sums and counts in float64. `compute()` divides only
at the end, so the result is the pixel-weighted value over the split, never a mean of per-batch
means. The per-class IoU follows cityscapesscripts' evalPixelLevelSemanticLabeling: ground-truth
ignore pixels (255) count nowhere, and a class absent from both ground truth and prediction
(union 0) is NaN and left out of the mean.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES

# Indices into the float64 accumulator vector `MultiTaskMetrics.sums`.
_SEEN_SEMANTIC, _SEEN_INSTANCE, _SEEN_DEPTH = 0, 1, 2
_INST_ABS, _INST_COUNT, _DEPTH_ABS, _DEPTH_SQ, _DEPTH_COUNT = 3, 4, 5, 6, 7
_NUM_SUMS = 8


class MultiTaskMetrics:
    """Confusion matrix and regression-error sums over a split; `compute()` gives the DESIGN.md keys.

    Keys (only for the tasks that were updated): `semantic/miou`, `semantic/iou/<class>`,
    `semantic/pixel_acc` (percent); `instance/mean_error_px` (mean |dx|+|dy| over instance pixels);
    `depth/mean_error_px`, `depth/rmse_px` (over `depth_mask`). A regression metric whose mask was
    empty over the whole split is NaN, as is the IoU of a class with union 0 (left out of the mean).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, class_names: tuple[str, ...] | None = None):
        if class_names is None:
            if num_classes != NUM_CLASSES:
                raise ValueError(f"num_classes={num_classes} differs from the label table ({NUM_CLASSES}): "
                                 "pass class_names")
            class_names = CLASS_NAMES
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)  # (gt, pred)
        self.sums = torch.zeros(_NUM_SUMS, dtype=torch.float64)

    def _to(self, device: torch.device) -> None:
        if self.confusion.device != device:
            self.confusion = self.confusion.to(device)
            self.sums = self.sums.to(device)

    @torch.no_grad()
    def update(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
        """Add one batch. Only the tasks present in `outputs` are scored.

        `outputs["semantic"]` is (B,C,H,W) logits (argmax is taken) or an integer (B,H,W) map of
        trainIds; the other entries follow DESIGN.md at the resolution of `batch`.
        """
        if not outputs:
            raise ValueError("outputs is empty: nothing to score")
        device = next(iter(outputs.values())).device
        self._to(device)
        for task in outputs:
            if task not in _UPDATERS:
                raise KeyError(f"unknown task '{task}' in outputs; valid tasks are {list(_UPDATERS)}")
            _UPDATERS[task](self, outputs[task], batch)

    def _update_semantic(self, logits: torch.Tensor, batch: dict) -> None:
        gt = _need(batch, "semantic", "semantic")
        if logits.dim() == 4:
            if logits.shape[1] != self.num_classes:
                raise ValueError(f"semantic logits have {logits.shape[1]} channels, expected {self.num_classes}")
            pred = logits.argmax(1)
        elif logits.dim() == 3 and not logits.is_floating_point():
            pred = logits
        else:
            raise ValueError(f"semantic output must be (B,C,H,W) logits or an integer (B,H,W) map, "
                             f"got {tuple(logits.shape)} {logits.dtype}")
        _same_shape("semantic", pred, gt)
        c = self.num_classes
        if logits.dim() == 3 and pred.numel():  # argmax labels are in range by construction; given maps are checked
            lo, hi = torch.aminmax(pred)
            if int(lo) < 0 or int(hi) >= c:
                raise ValueError(f"semantic prediction has labels outside 0..{c - 1}")
        # One histogram of gt * C + pred (int32: cheap passes) gives the confusion matrix in its first
        # C*C bins; ignore pixels (gt 255) land in [255*C, 256*C); anything else is a bad target label.
        bad_target = f"semantic target has labels outside 0..{c - 1} (and not {IGNORE_INDEX})"
        idx = torch.add(pred.int(), gt.to(pred.device).int(), alpha=c).flatten()
        try:
            counts = torch.bincount(idx, minlength=c * c)
        except RuntimeError as e:  # negative values
            raise ValueError(bad_target) from e
        if int(counts[c * c:].sum() - counts[IGNORE_INDEX * c: (IGNORE_INDEX + 1) * c].sum()):
            raise ValueError(bad_target)
        self.confusion += counts[: c * c].view(c, c)
        self.sums[_SEEN_SEMANTIC] = 1

    def _update_instance(self, pred: torch.Tensor, batch: dict) -> None:
        gt, mask = _target_and_mask(batch, "instance", pred)
        err = (pred.float() - gt.float()).abs().sum(1)  # (B,H,W) |dx| + |dy|
        self.sums[_INST_ABS] += torch.where(mask, err, 0).sum(dtype=torch.float64)
        self.sums[_INST_COUNT] += mask.sum()
        self.sums[_SEEN_INSTANCE] = 1

    def _update_depth(self, pred: torch.Tensor, batch: dict) -> None:
        gt, mask = _target_and_mask(batch, "depth", pred)
        diff = (pred.float() - gt.float())[:, 0]  # (B,H,W)
        self.sums[_DEPTH_ABS] += torch.where(mask, diff.abs(), 0).sum(dtype=torch.float64)
        self.sums[_DEPTH_SQ] += torch.where(mask, diff.double().square(), 0).sum()
        self.sums[_DEPTH_COUNT] += mask.sum()
        self.sums[_SEEN_DEPTH] = 1

    def all_reduce(self) -> None:
        """Sum the accumulators over all torch.distributed processes; a no-op when not distributed."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        if dist.get_backend() == "nccl":
            self._to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(self.confusion, op=dist.ReduceOp.SUM)
        seen = self.sums[:_INST_ABS].clone()
        dist.all_reduce(self.sums, op=dist.ReduceOp.SUM)
        dist.all_reduce(seen, op=dist.ReduceOp.MAX)
        self.sums[:_INST_ABS] = seen

    def class_iou(self) -> torch.Tensor:
        """Per-class IoU in percent (float64, NaN where the class is in neither GT nor prediction)."""
        conf = self.confusion.cpu().double()
        tp = conf.diag()
        union = conf.sum(0) + conf.sum(1) - tp
        return torch.where(union > 0, tp / union, math.nan) * 100.0

    def compute(self) -> dict[str, float]:
        """The metrics of DESIGN.md for the tasks seen so far, as plain floats."""
        sums = self.sums.cpu().tolist()
        out: dict[str, float] = {}
        if sums[_SEEN_SEMANTIC]:
            iou = self.class_iou()
            present = ~iou.isnan()
            out["semantic/miou"] = float(iou[present].mean()) if present.any() else math.nan
            total = int(self.confusion.sum())
            out["semantic/pixel_acc"] = 100.0 * int(self.confusion.diag().sum()) / total if total else math.nan
            for name, value in zip(self.class_names, iou.tolist()):
                out[f"semantic/iou/{name}"] = value
        if sums[_SEEN_INSTANCE]:
            out["instance/mean_error_px"] = _ratio(sums[_INST_ABS], sums[_INST_COUNT])
        if sums[_SEEN_DEPTH]:
            out["depth/mean_error_px"] = _ratio(sums[_DEPTH_ABS], sums[_DEPTH_COUNT])
            out["depth/rmse_px"] = math.sqrt(_ratio(sums[_DEPTH_SQ], sums[_DEPTH_COUNT]))
        return out


_UPDATERS = {
    "semantic": MultiTaskMetrics._update_semantic,
    "instance": MultiTaskMetrics._update_instance,
    "depth": MultiTaskMetrics._update_depth,
}


def _need(batch: dict, task: str, key: str) -> torch.Tensor:
    if key not in batch:
        raise KeyError(f"batch has no '{key}', needed to score task '{task}' (batch keys: {sorted(batch)})")
    return batch[key]


def _target_and_mask(batch: dict, task: str, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A regression task's (B,C,H,W) target and (B,H,W) validity mask, checked against `pred`."""
    gt = _need(batch, task, task).to(pred.device)
    mask = _need(batch, task, f"{task}_mask").to(pred.device)
    _same_shape(task, pred, gt)
    if mask.shape != (gt.shape[0], *gt.shape[2:]):
        raise ValueError(f"{task}_mask shape {tuple(mask.shape)} does not match {task} {tuple(gt.shape)}")
    return gt, mask


def _same_shape(task: str, pred: torch.Tensor, gt: torch.Tensor) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"{task}: prediction shape {tuple(pred.shape)} does not match target {tuple(gt.shape)}")


def _ratio(total: float, count: float) -> float:
    return total / count if count else math.nan
