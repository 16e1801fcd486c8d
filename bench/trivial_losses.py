"""Each task's loss for a trivial predictor on a split, at 128x256 by default.

Uniform class scores give cross-entropy ln(19) on every labelled pixel; zero instance vectors give
the mean |dx| + |dy| over instance pixels; zero disparity gives the mean |d| over depth_mask. The
sums run over the whole split (pixel-weighted), like the training losses over a batch.

    python -m bench.trivial_losses --root datasets/synthetic-cityscapes [--split val] [--size 128x256]
"""

import argparse
import math

import numpy as np

from data.cityscapes import CityscapesMultiTask
from data.labels import IGNORE_INDEX, NUM_CLASSES
from data.transforms import parse_size


def trivial_losses(dataset: CityscapesMultiTask) -> dict[str, float]:
    """Pixel-weighted trivial-predictor losses over every item of `dataset`."""
    labelled = instance_sum = instance_count = depth_sum = depth_count = 0.0
    for i in range(len(dataset)):
        item = dataset[i]
        labelled += float((item["semantic"] != IGNORE_INDEX).sum())
        mask = item["instance_mask"].numpy()
        instance_sum += float(np.abs(item["instance"].numpy()[:, mask]).sum())
        instance_count += float(mask.sum())
        depth_mask = item["depth_mask"].numpy()
        depth_sum += float(np.abs(item["depth"].numpy()[0][depth_mask]).sum())
        depth_count += float(depth_mask.sum())
    return {
        # Uniform scores: -log(1/C) on each labelled pixel, whatever the label.
        "semantic": math.log(NUM_CLASSES) if labelled else 0.0,
        "instance": instance_sum / max(instance_count, 1.0),
        "depth": depth_sum / max(depth_count, 1.0),
    }


def main() -> None:
    """Print the three losses for a split."""
    parser = argparse.ArgumentParser(description="Trivial-predictor loss per task.")
    parser.add_argument("--root", default=None, help="dataset root (default: $CITYSCAPES_DATASET)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--size", type=parse_size, default=(128, 256), help="HxW the frames are resized to")
    args = parser.parse_args()
    h, w = args.size
    dataset = CityscapesMultiTask(args.root, args.split, size=(h, w))
    losses = trivial_losses(dataset)
    print(f"{len(dataset)} {args.split} frames at {h}x{w}, trivial predictor:")
    print(f"  semantic  cross-entropy (uniform scores) {losses['semantic']:.3f}")
    print(f"  instance  mean |dx|+|dy| (zero vectors)   {losses['instance']:.3f} px")
    print(f"  depth     mean |d| (zero disparity)      {losses['depth']:.3f} px")


if __name__ == "__main__":
    main()
