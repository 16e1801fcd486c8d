"""Dataset-level metric accumulators: one per task, composed in tasks/specs.py.

An accumulator sums over a whole split and divides only in `compute()`, so its numbers are
pixel-weighted over the split, never a mean of per-batch means. Its state is a few tensors that
`all_reduce()` sums over torch.distributed processes (each process scores its own shard).

`ConfusionMatrix` follows cityscapesscripts' evalPixelLevelSemanticLabeling: ground-truth ignore
pixels (255) count nowhere, and a class absent from both ground truth and prediction (union 0) is
NaN and left out of the mean. `RegressionError` keeps the sum of the per-pixel L1 norm of the
error over channels (and optionally of its squared L2 norm) over the masked pixels.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

from tasks.labels import IGNORE_INDEX


class Accumulator:
    """Base: `update(pred, batch)`, `compute() -> {key: float}`, `all_reduce()`, `reset()`.

    Subclasses keep their sums in the tensors named by `_state` (summed over processes) and count
    the updates in `seen`, so a task never updated on any process reports nothing.
    """

    _state: tuple[str, ...] = ()

    def __init__(self, task: str) -> None:
        self.task = task
        self.reset()

    def reset(self) -> None:
        self.seen = torch.zeros((), dtype=torch.int64)

    def _to(self, device: torch.device) -> None:
        for name in ("seen", *self._state):
            t = getattr(self, name)
            if t.device != device:
                setattr(self, name, t.to(device))

    def all_reduce(self) -> None:
        """Sum the state over all processes; a no-op when not distributed."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        if dist.get_backend() == "nccl":
            self._to(torch.device("cuda", torch.cuda.current_device()))
        for name in ("seen", *self._state):
            dist.all_reduce(getattr(self, name), op=dist.ReduceOp.SUM)

    def _need(self, batch: dict, key: str) -> Tensor:
        if key not in batch:
            raise KeyError(f"batch has no '{key}', needed to score task '{self.task}' (batch keys: {sorted(batch)})")
        return batch[key]

    def update(self, pred: Tensor, batch: dict[str, Tensor]) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class ConfusionMatrix(Accumulator):
    """Semantic segmentation: one (gt, pred) confusion matrix -> `<task>/miou`, `/iou/<class>`, `/pixel_acc`."""

    _state = ("confusion",)

    def __init__(self, task: str, target: str, class_names: tuple[str, ...]) -> None:
        self.target, self.class_names, self.num_classes = target, tuple(class_names), len(class_names)
        super().__init__(task)

    def reset(self) -> None:
        super().reset()
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)  # (gt, pred)

    @torch.no_grad()
    def update(self, logits: Tensor, batch: dict[str, Tensor]) -> None:
        """`logits` (B,C,H,W) (argmax is taken) or an integer (B,H,W) map of class indices."""
        gt = self._need(batch, self.target)
        c = self.num_classes
        if logits.dim() == 4:
            if logits.shape[1] != c:
                raise ValueError(f"{self.task} logits have {logits.shape[1]} channels, expected {c}")
            pred = logits.argmax(1)
        elif logits.dim() == 3 and not logits.is_floating_point():
            pred = logits
        else:
            raise ValueError(f"{self.task} output must be (B,C,H,W) logits or an integer (B,H,W) map, "
                             f"got {tuple(logits.shape)} {logits.dtype}")
        _same_shape(self.task, pred, gt)
        self._to(pred.device)
        if logits.dim() == 3 and pred.numel():  # argmax labels are in range by construction; given maps are checked
            lo, hi = torch.aminmax(pred)
            if int(lo) < 0 or int(hi) >= c:
                raise ValueError(f"{self.task} prediction has labels outside 0..{c - 1}")
        # One histogram of gt * C + pred (int32: cheap passes) gives the confusion matrix in its first
        # C*C bins; ignore pixels (gt 255) land in [255*C, 256*C); anything else is a bad target label.
        bad_target = f"{self.task} target has labels outside 0..{c - 1} (and not {IGNORE_INDEX})"
        idx = torch.add(pred.int(), gt.to(pred.device).int(), alpha=c).flatten()
        try:
            counts = torch.bincount(idx, minlength=c * c)
        except RuntimeError as e:  # negative values
            raise ValueError(bad_target) from e
        if int(counts[c * c:].sum() - counts[IGNORE_INDEX * c: (IGNORE_INDEX + 1) * c].sum()):
            raise ValueError(bad_target)
        self.confusion += counts[: c * c].view(c, c)
        self.seen += 1

    def class_iou(self) -> Tensor:
        """Per-class IoU in percent (float64, NaN where the class is in neither GT nor prediction)."""
        conf = self.confusion.cpu().double()
        tp = conf.diag()
        union = conf.sum(0) + conf.sum(1) - tp
        return torch.where(union > 0, tp / union, math.nan) * 100.0

    def compute(self) -> dict[str, float]:
        if not int(self.seen):
            return {}
        iou = self.class_iou()
        present = ~iou.isnan()
        total = int(self.confusion.sum())
        out = {f"{self.task}/miou": float(iou[present].mean()) if present.any() else math.nan,
               f"{self.task}/pixel_acc": 100.0 * int(self.confusion.diag().sum()) / total if total else math.nan}
        for name, value in zip(self.class_names, iou.tolist()):
            out[f"{self.task}/iou/{name}"] = value
        return out


class RegressionError(Accumulator):
    """Dense regression over a mask -> `<task>/mean_error_px` (mean over masked pixels of sum_c |e_c|)
    and, with `rmse`, `<task>/rmse_px` (square root of the mean of sum_c e_c^2)."""

    _state = ("sums",)  # [sum |e|, sum e^2, masked pixels], float64

    def __init__(self, task: str, target: str, mask: str, rmse: bool = False) -> None:
        self.target, self.mask, self.rmse = target, mask, rmse
        super().__init__(task)

    def reset(self) -> None:
        super().reset()
        self.sums = torch.zeros(3, dtype=torch.float64)

    @torch.no_grad()
    def update(self, pred: Tensor, batch: dict[str, Tensor]) -> None:
        gt = self._need(batch, self.target).to(pred.device)
        mask = self._need(batch, self.mask).to(pred.device)
        _same_shape(self.task, pred, gt)
        if mask.shape != (gt.shape[0], *gt.shape[2:]):
            raise ValueError(f"{self.mask} shape {tuple(mask.shape)} does not match {self.target} {tuple(gt.shape)}")
        self._to(pred.device)
        diff = pred.float() - gt.float()  # (B, C, H, W)
        self.sums[0] += torch.where(mask, diff.abs().sum(1), 0).sum(dtype=torch.float64)
        if self.rmse:
            self.sums[1] += torch.where(mask, diff.double().square().sum(1), 0).sum()
        self.sums[2] += mask.sum()
        self.seen += 1

    def compute(self) -> dict[str, float]:
        if not int(self.seen):
            return {}
        abs_sum, sq_sum, count = self.sums.cpu().tolist()
        out = {f"{self.task}/mean_error_px": abs_sum / count if count else math.nan}
        if self.rmse:
            out[f"{self.task}/rmse_px"] = math.sqrt(sq_sum / count) if count else math.nan
        return out


def _same_shape(task: str, pred: Tensor, gt: Tensor) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"{task}: prediction shape {tuple(pred.shape)} does not match target {tuple(gt.shape)}")


class DepthError(Accumulator):
    """Depth of the 2-task Cityscapes protocol -> `<task>/abs_err` (mean |pred - gt|) and `<task>/rel_err`
    (mean |pred - gt| / gt) over the pixels whose ground truth is non-zero (the `mask` key).

    Pixel-weighted over the whole split. nash-mtl / FAMO average per-batch means over the batches and LibMTL
    weights them by batch size: those equal ours only when every batch holds the same number of valid pixels."""

    _state = ("sums",)  # [sum |e|, sum |e| / gt, masked pixels], float64

    def __init__(self, task: str, target: str, mask: str) -> None:
        self.target, self.mask = target, mask
        super().__init__(task)

    def reset(self) -> None:
        super().reset()
        self.sums = torch.zeros(3, dtype=torch.float64)

    @torch.no_grad()
    def update(self, pred: Tensor, batch: dict[str, Tensor]) -> None:
        gt = self._need(batch, self.target).to(pred.device)
        mask = self._need(batch, self.mask).to(pred.device)
        _same_shape(self.task, pred, gt)
        self._to(pred.device)
        err = (pred.double() - gt.double()).abs()[:, 0]  # (B, H, W)
        gt0 = gt.double()[:, 0]
        self.sums[0] += torch.where(mask, err, 0).sum()
        self.sums[1] += torch.where(mask, err / torch.where(mask, gt0, 1.0), 0).sum()
        self.sums[2] += mask.sum()
        self.seen += 1

    def compute(self) -> dict[str, float]:
        if not int(self.seen):
            return {}
        abs_sum, rel_sum, count = self.sums.cpu().tolist()
        return {f"{self.task}/abs_err": abs_sum / count if count else math.nan,
                f"{self.task}/rel_err": rel_sum / count if count else math.nan}
