"""Evaluation speed: MultiTaskMetrics against cityscapesscripts' pixel-level evaluator, same frames.

    python -m bench.eval [--root DATASET | --size H W] [--split val] [--frames 20] [--repeats 3]

Ground truth: the first N frames of `--root` (real Cityscapes or the synthetic set), or, without
`--root`, N frames at H x W (default 1024 x 2048) made by `data.synthetic.generate` in a temporary
folder. Predictions: the
ground truth with about half of its 16x16 blocks replaced by random classes (fixed seed), written
as label-id PNGs. Both evaluators read the same PNGs from disk; ours also once from memory.
Prints frames/s of each, their ratio, and checks that every class IoU and the mean agree.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from data.labels import CLASS_NAMES, ID_TO_TRAINID, NUM_CLASSES
from evaluation import MultiTaskMetrics
from evaluation.official import gt_label_files, run_pixel_level, write_prediction_png

BLOCK = 16


def noisy_predictions(label_files: list[Path], pred_dir: Path, seed: int = 0) -> list[Path]:
    """Write a trainId prediction per frame: GT with ~half of the BLOCKxBLOCK blocks set to random classes."""
    rng = np.random.default_rng(seed)
    paths = []
    for gt_file in label_files:
        train_ids = ID_TO_TRAINID[cv2.imread(str(gt_file), cv2.IMREAD_UNCHANGED)].astype(np.int64)
        h, w = train_ids.shape
        bh, bw = -(-h // BLOCK), -(-w // BLOCK)
        ones = np.ones((BLOCK, BLOCK), np.int64)
        noise = np.kron(rng.integers(0, NUM_CLASSES, (bh, bw)), ones)[:h, :w]
        keep = np.kron(rng.random((bh, bw)) < 0.5, ones.astype(bool))[:h, :w] & (train_ids != 255)
        frame = gt_file.name[: -len("_gtFine_labelIds.png")]
        paths.append(write_prediction_png(pred_dir, frame, np.where(keep, train_ids, noise)))
    return paths


def read_pair(gt_file: Path, pred_file: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target) trainId maps as (1, H, W) tensors, from the label-id PNGs."""
    gt = cv2.LUT(cv2.imread(str(gt_file), cv2.IMREAD_UNCHANGED), ID_TO_TRAINID)
    pred = cv2.LUT(cv2.imread(str(pred_file), cv2.IMREAD_UNCHANGED), ID_TO_TRAINID)
    return torch.from_numpy(pred)[None], torch.from_numpy(gt)[None]


def time_ours(pairs: list[tuple[Path, Path]]) -> tuple[float, float, dict]:
    """Seconds to read the PNGs and score them; seconds to score them from memory; the metrics."""
    start = time.perf_counter()
    m = MultiTaskMetrics()
    for gt_file, pred_file in pairs:
        pred, gt = read_pair(gt_file, pred_file)
        m.update({"semantic": pred}, {"semantic": gt})
    result = m.compute()
    with_io = time.perf_counter() - start

    loaded = [read_pair(g, p) for g, p in pairs]
    start = time.perf_counter()
    m = MultiTaskMetrics()
    for pred, gt in loaded:
        m.update({"semantic": pred}, {"semantic": gt})
    m.compute()
    return with_io, time.perf_counter() - start, result


def synthetic_ground_truth(out: Path, frames: int, size: tuple[int, int]) -> Path:
    """A synthetic Cityscapes val split of `frames` frames at `size`, made by the data package's generator."""
    from data.synthetic import generate

    return generate(out, train=0, val=frames, size=size, seed=0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, help="dataset root (default: generate a small synthetic set)")
    p.add_argument("--split", default="val")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"),
                   help="frame size of the generated set (default: Cityscapes' 1024 2048)")
    p.add_argument("--repeats", type=int, default=3, help="report the best of this many runs of each")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for ours (default 1: the official evaluator uses one core too)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        root = args.root or synthetic_ground_truth(Path(tmp) / "data", args.frames, args.size)
        label_files = gt_label_files(root, args.split)[: args.frames]
        pred_dir = Path(tmp) / "pred"
        pairs = list(zip(label_files, noisy_predictions(label_files, pred_dir)))
        frames = [g.name[: -len("_gtFine_labelIds.png")] for g in label_files]
        h, w = cv2.imread(str(label_files[0]), cv2.IMREAD_UNCHANGED).shape

        # Best of `repeats` for each (the machine may be shared); the official run once more on one
        # frame, to separate its start-up (subprocess, imports) from its per-frame cost.
        ours_io = ours_mem = official_s = official_1 = math.inf
        for _ in range(args.repeats):
            io_s, mem_s, ours = time_ours(pairs)
            ours_io, ours_mem = min(ours_io, io_s), min(ours_mem, mem_s)
            start = time.perf_counter()
            official = run_pixel_level(root, args.split, pred_dir, frames)
            official_s = min(official_s, time.perf_counter() - start)
            start = time.perf_counter()
            run_pixel_level(root, args.split, pred_dir, frames[:1])
            official_1 = min(official_1, time.perf_counter() - start)

    diffs = [abs(official["class_iou"][n] - ours[f"semantic/iou/{n}"]) for n in CLASS_NAMES
             if not (math.isnan(official["class_iou"][n]) and math.isnan(ours[f"semantic/iou/{n}"]))]
    max_diff = max(diffs + [abs(official["iou_class"] - ours["semantic/miou"])])
    n = len(pairs)
    source = args.root or "data.synthetic.generate"
    print(f"{n} frames of {h}x{w} from {source}, best of {args.repeats} ({torch.get_num_threads()} torch threads)")
    print(f"official evalPixelLevelSemanticLabeling (subprocess, reads PNGs, also computes iIoU): "
          f"{official_s:7.2f} s  {n / official_s:8.1f} frames/s")
    per_frame = (official_s - official_1) / max(n - 1, 1)
    print(f"  of which start-up about {official_1 - per_frame:.2f} s; per frame after start-up "
          f"{per_frame * 1000:.1f} ms = {1 / per_frame:.1f} frames/s")
    print(f"MultiTaskMetrics, reading the same PNGs:                      "
          f"{ours_io:7.2f} s  {n / ours_io:8.1f} frames/s  ({official_s / ours_io:.1f}x faster)")
    print(f"MultiTaskMetrics, predictions already in memory:              "
          f"{ours_mem:7.2f} s  {n / ours_mem:8.1f} frames/s  ({official_s / ours_mem:.1f}x faster)")
    print(f"mIoU ours {ours['semantic/miou']:.6f}, official {official['iou_class']:.6f}; "
          f"largest difference over every class IoU and the mean: {max_diff:.2e} (percentage points)")
    identical = max_diff < 1e-9
    print("numbers identical" if identical else "NUMBERS DIFFER")
    print(f"per frame, official after start-up vs ours reading PNGs: {per_frame * n / ours_io:.1f}x")
    result = {"frames": n, "size": [h, w], "official_s": official_s, "official_per_frame_s": per_frame,
              "ours_io_s": ours_io, "ours_mem_s": ours_mem, "speedup_io": official_s / ours_io,
              "speedup_mem": official_s / ours_mem, "max_diff": max_diff}
    if not identical:
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
