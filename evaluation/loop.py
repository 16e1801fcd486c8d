"""`evaluate_model`: the dataset-level metrics of a model over a data loader (also under DDP)."""

from __future__ import annotations

import torch

from evaluation.metrics import MultiTaskMetrics


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
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(batch["image"])  # {task: (B, C, H, W)}
            metrics.update(_select(outputs, tasks), batch)
    metrics.all_reduce()
    model.train(was_training)
    return metrics.compute()


def _select(outputs: dict[str, torch.Tensor], tasks) -> dict[str, torch.Tensor]:
    if tasks is None:
        return outputs
    missing = [t for t in tasks if t not in outputs]
    if missing:
        raise KeyError(f"the model does not output task(s) {missing}; it outputs {list(outputs)}")
    return {t: outputs[t] for t in tasks}
