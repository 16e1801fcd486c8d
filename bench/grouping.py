"""Instance grouping speed per full-resolution frame, and the official AP it gives, for each method.

    python -m bench.grouping [--root DATASET] [--frames 4] [--size 1024 2048] [--noise 16] [--out FILE]

Frames: the first N of `--root`'s val split, or N frames at H x W (default Cityscapes' 1024 x 2048)
made by `data.synthetic.generate` in a temporary folder. Inputs per frame, at file resolution:
`oracle` = the ground-truth trainIds and centroid vectors (each method must find every object there:
official AP 100 %), and `noisy` = the same with Gaussian noise of `--noise` pixels (at 2048 wide) on
every vector, a stand-in for a trained model's scattered votes. Prints and writes the median seconds
per frame of `group_instances` (one thread, after one warm-up frame) and the official AP of each
method on each input; `--out` (default results/perf/grouping.json) keeps them with the command,
machine and git commit.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data.cityscapes import CityscapesMultiTask
from evaluation.instances import METHODS, REFERENCE_WIDTH, group_instances
from evaluation.official import run_instance_level, write_instance_predictions
from experiments.layout import ROOT, rel
from infra.atomic import write_json
from infra.provenance import git_commit


def inputs(data: CityscapesMultiTask, noise: float, seed: int = 0) -> dict[str, list]:
    """{"oracle": [(semantic, vectors)], "noisy": [...]} for every frame of `data`."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"oracle": [], "noisy": []}
    for i in range(len(data)):
        item = data[i]
        semantic, vectors = item["semantic"].numpy(), item["instance"].numpy()
        sigma = noise * semantic.shape[1] / REFERENCE_WIDTH
        out["oracle"].append((semantic, vectors))
        out["noisy"].append((semantic, vectors + rng.normal(0.0, sigma, vectors.shape).astype(np.float32)))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, help="dataset root (default: generate frames)")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    p.add_argument("--noise", type=float, default=16.0, help="vector noise (px at 2048 wide) of the noisy input")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "perf" / "grouping.json")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if unknown := [m for m in methods if m not in METHODS]:
        raise SystemExit(f"error: unknown grouping method(s) {unknown}; choose from {sorted(METHODS)}")
    if args.frames < 1:
        raise SystemExit("error: --frames must be at least 1")
    torch.set_num_threads(1)

    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-grouping-") as tmp:
        if args.root is None:
            from data.synthetic import generate

            root = generate(Path(tmp) / "data", train=0, val=args.frames, size=tuple(args.size), seed=0)
        else:
            root = args.root
        data = CityscapesMultiTask(root, "val", size=None, limit=args.frames)
        h, w = data[0]["semantic"].shape
        frames = [f.name for f in data.frames]
        for kind, pairs in inputs(data, args.noise).items():
            for method in methods:
                group_instances(*pairs[0], method)  # warm-up (imports, caches)
                times, pred_dir = [], Path(tmp) / f"{kind}-{method}"
                for name, (semantic, vectors) in zip(frames, pairs):
                    start = time.perf_counter()
                    found = group_instances(semantic, vectors, method)
                    times.append(time.perf_counter() - start)
                    write_instance_predictions(pred_dir, name, found)
                ap = run_instance_level(root, "val", pred_dir, frames)
                rows[f"{kind}/{method}"] = {"input": kind, "method": method,
                                            "s_per_frame_median": round(float(np.median(times)), 4),
                                            "s_per_frame_max": round(max(times), 4),
                                            "ap": ap["ap"], "ap50": ap["ap50"]}
                print(f"{kind:<7} {method:<7} {np.median(times):7.3f} s/frame (max {max(times):.3f})  "
                      f"AP {ap['ap']:6.2f}  AP50 {ap['ap50']:6.2f}", flush=True)
    result = {
        "command": shlex.join(["python", "-m", "bench.grouping", *(argv if argv is not None else sys.argv[1:])]),
        "git_commit": git_commit(), "machine": f"{platform.processor() or platform.machine()}, 1 thread",
        "frames": len(frames), "size": [h, w], "source": str(args.root or "data.synthetic.generate (seed 0)"),
        "noise_px_at_2048": args.noise, "rows": rows,
    }
    write_json(args.out, result)
    print(rel(args.out.resolve()))
    return result


if __name__ == "__main__":
    main()
