"""`evaluate_model`: the dataset-level metrics of a model over a data loader (also under DDP)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from tqdm import tqdm

import tasks as task_registry  # (the name `tasks` is a parameter below)
from evaluation.metrics import MultiTaskMetrics
from models import autocast_forward


class NonFiniteOutputError(RuntimeError):
    """The model's outputs hold NaN or infinity: its metrics would be meaningless numbers."""


def evaluate_model(model: torch.nn.Module, loader, device: torch.device | str,
                   amp_dtype: torch.dtype | None = None, tasks=None, progress: bool = False) -> dict[str, float]:
    """MultiTaskMetrics of `model` over `loader` (summed over DDP processes); restores train mode.

    `tasks` limits the scored tasks (default: every task the model outputs). Under DDP each
    process passes its own shard of the split; the accumulators are summed before computing.
    `progress` shows a bar with the batches done and the time left (on stderr).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    metrics = MultiTaskMetrics()
    names = task_registry.ALL_TASKS
    finite = torch.ones(len(names), dtype=torch.bool, device=device)  # per task, on the device: no sync per batch
    with torch.no_grad():
        for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, dynamic_ncols=True):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            outputs = _select(autocast_forward(model, batch["image"], amp_dtype), tasks)  # {task: (B, C, H, W)}
            for task, out in outputs.items():
                i = names.index(task)
                finite[i] = finite[i] & torch.isfinite(out).all()
            metrics.update(outputs, batch)
    model.train(was_training)
    flags = finite.to(torch.int32)
    if dist.is_initialized():  # every process stops, or none
        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    bad = [t for t, ok in zip(names, flags.tolist()) if not ok]
    if bad:
        raise NonFiniteOutputError(f"the model's {', '.join(bad)} output holds NaN or infinity; its metrics "
                                   "would be meaningless (non-finite weights, or an overflow under amp)")
    metrics.all_reduce()
    return metrics.compute()


def _select(outputs: dict[str, torch.Tensor], tasks) -> dict[str, torch.Tensor]:
    if tasks is None:
        return outputs
    missing = [t for t in tasks if t not in outputs]
    if missing:
        raise KeyError(f"the model does not output task(s) {missing}; it outputs {list(outputs)}")
    return {t: outputs[t] for t in tasks}
