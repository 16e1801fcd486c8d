"""Loader throughput next to the cost of only decoding the same PNGs.

    python -m bench.data --root datasets/synthetic-cityscapes [--items 200] [--size 128x256]

Decoding alone (image, labelIds, instanceIds, disparity with OpenCV) is the floor any loader pays;
the ratio of a full item to that floor is the cost of building targets (target: at most 1.3).
Also prints DataLoader samples/s with 0 and 2 workers (batch 8, default collate).
"""

import argparse
import time

import torch
from torch.utils.data import DataLoader

from data.cityscapes import CityscapesMultiTask, decode_frame


def time_per_item(fn, n: int, repeats: int = 3) -> float:
    """Best-of-`repeats` seconds per call of fn(i) over i in range(n)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - start) / n)
    return best


def loader_rate(dataset: CityscapesMultiTask, workers: int, batch_size: int = 8) -> float:
    """Samples per second through a DataLoader (worker start-up included, one pass)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    start = time.perf_counter()
    count = sum(len(batch["image"]) for batch in loader)
    return count / (time.perf_counter() - start)


def main() -> None:
    """Print decode and loader timings and their ratio."""
    parser = argparse.ArgumentParser(description="Data loader benchmark.")
    parser.add_argument("--root", default=None, help="dataset root (default: $CITYSCAPES_DATASET)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--size", default="128x256", help="HxW items are resized to")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(1)
    dataset = CityscapesMultiTask(args.root, args.split, size=size, limit=args.items)
    n = len(dataset)
    file_size = decode_frame(dataset.frames[0])[0].shape[:2]
    dataset[0]  # warm caches (imports, coordinate tables) before timing
    decode = time_per_item(lambda i: decode_frame(dataset.frames[i]), n)
    item = time_per_item(lambda i: dataset[i], n)
    print(f"{n} {args.split} frames, files {file_size[0]}x{file_size[1]} -> items {size[0]}x{size[1]}")
    print(f"  decode only (4 PNGs, cv2)   {decode * 1e3:7.2f} ms/item  {1 / decode:7.1f} items/s")
    print(f"  full item (decode+targets)  {item * 1e3:7.2f} ms/item  {1 / item:7.1f} items/s")
    print(f"  ratio full / decode          {item / decode:7.2f}  (target <= 1.30)")
    for workers in (0, 2):
        print(f"  DataLoader num_workers={workers}, batch 8: {loader_rate(dataset, workers):7.1f} samples/s")


if __name__ == "__main__":
    main()
