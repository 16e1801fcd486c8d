"""`evaluate_model`: the dataset-level metrics of a model over a data loader (also under DDP)."""

from __future__ import annotations

import torch
import torch.distributed as dist

import tasks as task_registry  # a module reference: tasks.py imports this package while it loads
from evaluation.metrics import MultiTaskMetrics


class NonFiniteOutputError(RuntimeError):
    """The model's outputs hold NaN or infinity: its metrics would be meaningless numbers."""


def evaluate_model(model: torch.nn.Module, loader, device: torch.device | str,
                   amp_dtype: torch.dtype | None = None, tasks=None) -> dict[str, float]:
    """MultiTaskMetrics of `model` over `loader` (summed over DDP processes); restores train mode.

    `tasks` limits the scored tasks (default: every task the model outputs). Under DDP each
    process passes its own shard of the split; the accumulators are summed before computing.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    metrics = MultiTaskMetrics()
    names = task_registry.ALL_TASKS
    finite = torch.ones(len(names), dtype=torch.bool, device=device)  # per task, on the device: no sync per batch
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = _select(model(batch["image"]), tasks)  # {task: (B, C, H, W)}
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
