"""Size and speed of the 2-task protocols' models: parameters and one forward + backward pass.

    python -m bench.protocol_models [--batch 2] [--size 128x256] [--threads 1] [--device cpu]

For each of segnet-mtan, segnet-split and deeplabv3plus-hps (ResNet-50, output stride 8) built for the two
tasks seg7 and depth_abs: the parameter count, then the time of one forward and backward pass of a random
batch (the second of two passes; the first warms up).
"""

from __future__ import annotations

import argparse
import time

import torch

from data.transforms import parse_size
from engine.config import load_config
from models import build_model

ARCHS = {"segnet-mtan": [], "segnet-split": [], "deeplabv3plus-hps": ["model.backbone=resnet50"]}


def measure(arch: str, batch: int, size: tuple[int, int], device: torch.device) -> tuple[int, float]:
    """(parameters, seconds of the second forward + backward pass)."""
    cfg = load_config([], ["tasks=[seg7, depth_abs]", "data.format=npy", f"model.arch={arch}", "method.name=fixed",
                           "method.fixed.weights={seg7: 1.0, depth_abs: 1.0}", *ARCHS[arch]])
    model = build_model(cfg, pretrained=False).to(device)
    x = torch.randn(batch, 3, *size, device=device)
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        sum(o.float().mean() for o in model(x).values()).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return sum(p.numel() for p in model.parameters()), seconds


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=parse_size, default=(128, 256), help="HxW")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = args.size
    device = torch.device(args.device)
    print(f"batch {args.batch} at {size[0]}x{size[1]} on {device} ({args.threads} thread(s))")
    for arch in ARCHS:
        n, s = measure(arch, args.batch, size, device)
        print(f"  {arch:<20} {n / 1e6:6.2f} M parameters   forward + backward {s:7.2f} s")


if __name__ == "__main__":
    main()
