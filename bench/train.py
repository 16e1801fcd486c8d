"""Training step speed and memory of a config's model, on random tensors (no data loading).

    python -m bench.train --config configs/paper_tiny.yaml [key=value ...] [--steps 20] [--warmup 5]

Times what one iteration of train.py does (forward under the config's autocast, task losses,
loss weighting, backward, SGD step) and prints seconds per step, images/s and peak memory
(GPU: torch.cuda.max_memory_allocated; CPU: the process's peak resident set size).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import train
from config import load_config
from data.labels import NUM_CLASSES
from losses import build_weighting_from_config, task_losses
from models import build_model


def random_batch(batch: int, h: int, w: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch with the sample dict's keys, shapes and dtypes (DESIGN.md)."""
    g = torch.Generator().manual_seed(0)
    b = {
        "image": torch.randn(batch, 3, h, w, generator=g),
        "semantic": torch.randint(0, NUM_CLASSES, (batch, h, w), generator=g),
        "instance": torch.randn(batch, 2, h, w, generator=g) * 10,
        "instance_mask": torch.rand(batch, h, w, generator=g) < 0.2,
        "depth": torch.rand(batch, 1, h, w, generator=g) * 5,
        "depth_mask": torch.rand(batch, h, w, generator=g) < 0.8,
    }
    return {k: v.to(device) for k, v in b.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("overrides", nargs="*")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    dtype = cfg.autocast_dtype(device.type)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    h, w = cfg.data.crop or cfg.data.size or (1024, 2048)
    bs = cfg.optim.batch_size

    model = build_model(cfg).to(device).train()
    weighting = build_weighting_from_config(cfg).to(device)
    opt = train.build_optimizer(cfg, model, weighting)
    batch = random_batch(bs, h, w, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = model(batch["image"])
        total, _ = weighting(task_losses(outputs, batch))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        where = torch.cuda.get_device_name()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        where = f"cpu ({torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    result = {"config": cfg.name, "device": where, "backbone": cfg.model.backbone, "params_M": round(params, 2),
              "batch": bs, "size": [h, w], "amp": str(dtype).replace("torch.", "") if dtype else "off",
              "s_per_step": round(dt, 4), "images_per_s": round(bs / dt, 2), "peak_mem_GiB": round(peak, 2)}
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
