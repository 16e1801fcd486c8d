"""Building the training parts from a config: model, method, optimiser, schedule, scaler, DDP wrapper.

train.py and bench/train.py both call `build_parts`, so the benchmark times exactly what training runs.
"""

from __future__ import annotations

import torch
from torch.nn.parallel import DistributedDataParallel

from engine.config import Config, build_method
from engine.step import StepParts
from models import build_model
from tasks import TASK_SPECS


def build_optimizer(cfg: Config, model: torch.nn.Module, method: torch.nn.Module) -> torch.optim.Optimizer:
    """Paper SGD (Appendix A); weight decay only on conv/linear weights, never on norms, biases
    or the method's own parameters (log-variances), which get their own learning-rate multiplier."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    o = cfg.optim
    groups = [{"params": decay, "weight_decay": o.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    method_params = method.optimizer_parameters()
    if method_params:
        groups.append({"params": method_params, "weight_decay": 0.0, "lr": o.lr * cfg.method.lr_mult})
    impl = {"auto": {}, "foreach": {"foreach": True}, "fused": {"fused": True}, "loop": {"foreach": False}}[o.impl]
    if o.optimizer == "adam":  # the step-size control (docs/comparisons.md) and the 2-task protocols
        return torch.optim.Adam(groups, lr=o.lr, **impl)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, **impl)


def poly_schedule(optimizer: torch.optim.Optimizer, iterations: int, power: float):
    """lr = base_lr * (1 - step / iterations) ** power, stepped every iteration."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - min(step, iterations) / iterations) ** power)


def compiled(net: torch.nn.Module, mode: str) -> torch.nn.Module:
    """`net` under torch.compile (`compile`: default | reduce-overhead | max-autotune), or `net` itself (none).

    Compiled after the DDP wrap, as PyTorch recommends (DDP's optimiser splits the graph at its gradient
    buckets so communication still overlaps the backward). Only the training forward and backward are
    compiled: the model object itself stays eager (evaluation, checkpoints: its state dict has no
    `_orig_mod.` prefix, so checkpoints load into eager models and back). `reduce-overhead` adds CUDA graphs
    on GPU; on the CPU torch skips the graphs and it runs as `default`."""
    if mode == "none":
        return net
    return torch.compile(net, mode=None if mode == "default" else mode)


def build_parts(cfg: Config, device: torch.device, steps_per_epoch: int, world: int = 1, rank: int = 0,
                pretrained: bool = True) -> StepParts:
    """Everything `engine.step.train_step` needs, freshly initialised from `cfg.seed`; `pretrained=False`
    leaves the backbone's configured initial weights unread (a resumed run loads a checkpoint instead)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, pretrained=pretrained).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world > 1 and cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    method = build_method(cfg).to(device)
    optimizer = build_optimizer(cfg, model, method)
    scheduler = poly_schedule(optimizer, cfg.optim.iterations, cfg.optim.poly_power) if cfg.optim.schedule == "poly" \
        else torch.optim.lr_scheduler.StepLR(optimizer, cfg.optim.step_every, cfg.optim.step_gamma)
    dtype = cfg.autocast_dtype(device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    net = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    net = compiled(net, cfg.compile)
    return StepParts(model=model, net=net, method=method, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                     autocast_dtype=dtype, grad_clip=cfg.optim.grad_clip, seed=cfg.seed,
                     steps_per_epoch=steps_per_epoch, iterations=cfg.optim.iterations, world=world, rank=rank,
                     device=device, channels_last=cfg.channels_last, check_finite=cfg.check_finite,
                     compile=cfg.compile)


# For speed measurements (bench/, reproduce.py plan): the parts of a config and a random batch of its shape.
def random_batch(batch: int, h: int, w: int, device: torch.device,
                 tasks: tuple[str, ...] | list[str] = ()) -> dict[str, torch.Tensor]:
    """A batch with the sample dict's keys, shapes and dtypes (docs/design.md): the paper's three tasks' keys,
    plus the target keys of any other registered task in `tasks` (the 2-task protocol's seg7, depth_abs, ...):
    a class index map for a classification task, values and a valid-pixel mask for a regression task."""
    g = torch.Generator().manual_seed(0)
    b = {
        "image": torch.randn(batch, 3, h, w, generator=g),
        "semantic": torch.randint(0, TASK_SPECS["semantic"].channels, (batch, h, w), generator=g),
        "instance": torch.randn(batch, 2, h, w, generator=g) * 10,
        "instance_mask": torch.rand(batch, h, w, generator=g) < 0.2,
        "depth": torch.rand(batch, 1, h, w, generator=g) * 5,
        "depth_mask": torch.rand(batch, h, w, generator=g) < 0.8,
    }
    for task in tasks:
        spec = TASK_SPECS[task]
        if all(k in b for k in spec.targets):
            continue
        target, *masks = spec.targets
        if spec.kind == "classification":
            b[target] = torch.randint(0, spec.channels, (batch, h, w), generator=g)
        else:
            b[target] = torch.rand(batch, spec.channels, h, w, generator=g) * 5
        for mask in masks:
            b[mask] = torch.rand(batch, h, w, generator=g) < 0.8
    return {k: v.to(device) for k, v in b.items()}


def random_batch_parts(cfg: Config, device: torch.device):
    """(parts, batch): the training parts of `cfg` in train mode and a random batch of its size."""
    h, w = cfg.data.crop or cfg.data.size or (1024, 2048)
    parts = build_parts(cfg, device, steps_per_epoch=10**9, pretrained=False)  # speed: initial weights do not matter
    parts.model.train()
    return parts, random_batch(cfg.optim.batch_size, h, w, device, cfg.tasks)
