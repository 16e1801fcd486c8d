"""Training step speed and memory of a config's model and method, on random tensors (no data loading).

    python -m bench.train --config configs/paper_tiny.yaml [key=value ...] [--steps 20] [--warmup 5]
    python -m bench.train --config configs/demo.yaml method.name=pcgrad

Times `engine.step.train_step`, the step train.py runs (forward under the config's autocast, task
losses, the method, backward or per-task gradients, SGD step), on parts built by the same
`engine.build.build_parts`, and prints seconds per step, images/s and peak memory (GPU:
torch.cuda.max_memory_allocated; CPU: the process's peak resident set size).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from engine.build import build_parts
from engine.config import load_config
from engine.step import train_step
from tasks import TASK_SPECS


def random_batch(batch: int, h: int, w: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch with the sample dict's keys, shapes and dtypes (docs/design.md)."""
    g = torch.Generator().manual_seed(0)
    b = {
        "image": torch.randn(batch, 3, h, w, generator=g),
        "semantic": torch.randint(0, TASK_SPECS["semantic"].channels, (batch, h, w), generator=g),
        "instance": torch.randn(batch, 2, h, w, generator=g) * 10,
        "instance_mask": torch.rand(batch, h, w, generator=g) < 0.2,
        "depth": torch.rand(batch, 1, h, w, generator=g) * 5,
        "depth_mask": torch.rand(batch, h, w, generator=g) < 0.8,
    }
    return {k: v.to(device) for k, v in b.items()}


def build(cfg, device: torch.device):
    """(parts, batch): the training parts of `cfg` in train mode and a random batch of its size."""
    h, w = cfg.data.crop or cfg.data.size or (1024, 2048)
    parts = build_parts(cfg, device, steps_per_epoch=10**9, pretrained=False)  # speed: initial weights do not matter
    parts.model.train()
    return parts, random_batch(cfg.optim.batch_size, h, w, device)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("overrides", nargs="*")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    h, w = cfg.data.crop or cfg.data.size or (1024, 2048)
    bs = cfg.optim.batch_size
    parts, batch = build(cfg, device)

    for i in range(args.warmup):
        train_step(parts, batch, i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(args.steps):
        train_step(parts, batch, args.warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        where = torch.cuda.get_device_name()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        where = f"cpu ({torch.get_num_threads()} threads)"
    params = sum(q.numel() for q in parts.model.parameters()) / 1e6
    dtype = parts.autocast_dtype
    result = {"config": cfg.name, "device": where, "backbone": cfg.model.backbone, "method": cfg.method.name,
              "params_M": round(params, 2), "batch": bs, "size": [h, w],
              "amp": str(dtype).replace("torch.", "") if dtype else "off",
              "s_per_step": round(dt, 4), "images_per_s": round(bs / dt, 2), "peak_mem_GiB": round(peak, 2)}
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
