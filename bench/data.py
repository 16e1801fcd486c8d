"""Loader throughput: PNG decoding floor, full items, and items from the Tiny cache (data/cache.py).

    python -m bench.data --root datasets/synthetic-cityscapes [--root OTHER ...] [--items 200]
        [--size 128x256] [--json results/perf/data-cache.json]

Per dataset root:
- decoding alone (image, labelIds, instanceIds, disparity with OpenCV) is the floor any PNG loader
  pays; the ratio of a full item to that floor is the cost of building targets (target: <= 1.3);
- the same items read from a cache of the split built for this run (in a temporary directory unless
  --cache-out), without and with the training augmentation (random flip), PNG and cache timed in
  alternating rounds (best of 3 each) so that load from other processes hits both alike; the cache
  is checked to return the same tensors first;
- DataLoader samples/s with 0 and 2 workers (batch 8, default collate), PNG and cache.
One thread per process, as in the loader's workers. With --json the figures are written with the
command, git commit and machine.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from data.cache import write_split
from data.cityscapes import CityscapesMultiTask, decode_frame
from data.transforms import Augment, parse_size
from infra.atomic import write_json
from infra.provenance import git_commit


def time_per_item(fn, n: int, repeats: int = 3) -> float:
    """Best-of-`repeats` seconds per call of fn(i) over i in range(n)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - start) / n)
    return best


def interleaved(fns: dict, n: int, rounds: int = 3) -> dict[str, float]:
    """Best seconds per call of each fn(i) over i < n, the variants taking turns round after round."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], time_per_item(fn, n, repeats=1))
    return best


def loader_rate(dataset: CityscapesMultiTask, workers: int, batch_size: int = 8) -> float:
    """Samples per second through a DataLoader (worker start-up included, one pass)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    start = time.perf_counter()
    count = sum(len(batch["image"]) for batch in loader)
    return count / (time.perf_counter() - start)


def same_items(a: CityscapesMultiTask, b: CityscapesMultiTask, n: int) -> bool:
    """Every key of the first n items equal (same seed per item)."""
    for i in range(n):
        torch.manual_seed(i)
        x = a[i]
        torch.manual_seed(i)
        y = b[i]
        if any(not torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def bench_root(root: str | None, split: str, size: tuple[int, int], items: int, cache_out: str | None) -> dict:
    """The figures for one dataset root."""
    png = CityscapesMultiTask(root, split, size=size, limit=items, cache="off")
    png_aug = CityscapesMultiTask(root, split, size=size, limit=items, augment=Augment(flip=True), cache="off")
    n = len(png)
    file_size = decode_frame(png.frames[0])[0].shape[:2]
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        out = Path(cache_out or tmp)
        start = time.perf_counter()
        write_split(png.root, split, size, out, workers=1, progress=False)
        frames_cached = len(CityscapesMultiTask(root, split, size=size, cache=out))
        build_s = time.perf_counter() - start
        cached = CityscapesMultiTask(root, split, size=size, limit=items, cache=out)
        cached_aug = CityscapesMultiTask(root, split, size=size, limit=items, augment=Augment(flip=True), cache=out)
        png[0], cached[0]  # warm caches (imports, coordinate tables, page cache) before timing
        equal = same_items(png, cached, min(n, 20)) and same_items(png_aug, cached_aug, min(n, 20))
        t = interleaved({
            "decode": lambda i: decode_frame(png.frames[i]),
            "png": lambda i: png[i], "cache": lambda i: cached[i],
            "png_flip": lambda i: png_aug[i], "cache_flip": lambda i: cached_aug[i]}, n)
        rates = {f"{name}_workers{w}": round(loader_rate(ds, w), 1)
                 for w in (0, 2) for name, ds in (("png", png), ("cache", cached))}
    return {
        "root": str(png.root), "split": split, "items": n, "file_size": list(file_size), "item_size": list(size),
        "cache_build_s": round(build_s, 2), "cache_frames": frames_cached, "cache_equals_png": equal,
        "ms_per_item": {k: round(v * 1e3, 3) for k, v in t.items()},
        "speedup_cache_vs_png": round(t["png"] / t["cache"], 1),
        "speedup_cache_vs_png_flip": round(t["png_flip"] / t["cache_flip"], 1),
        "ratio_full_item_vs_decode": round(t["png"] / t["decode"], 2),
        "dataloader_samples_per_s": rates,
    }


def report(r: dict) -> None:
    ms = r["ms_per_item"]
    fh, fw = r["file_size"]
    h, w = r["item_size"]
    print(f"{r['items']} {r['split']} frames of {r['root']}, files {fh}x{fw} -> items {h}x{w}")
    print(f"  decode only (4 PNGs, cv2)      {ms['decode']:8.2f} ms/item")
    print(f"  full item from PNGs            {ms['png']:8.2f} ms/item  "
          f"(ratio to decode {r['ratio_full_item_vs_decode']:.2f}, target <= 1.30)")
    print(f"  full item from the cache       {ms['cache']:8.3f} ms/item  {r['speedup_cache_vs_png']:.1f}x faster "
          f"(target >= 10x from 2048x1024 PNGs)")
    print(f"  with random flip: PNG {ms['png_flip']:.2f} ms, cache {ms['cache_flip']:.3f} ms "
          f"({r['speedup_cache_vs_png_flip']:.1f}x)")
    print(f"  cache of all {r['cache_frames']} frames built in {r['cache_build_s']:.1f} s (one process); "
          f"items equal the PNG path's: {r['cache_equals_png']}")
    for key, rate in r["dataloader_samples_per_s"].items():
        print(f"  DataLoader {key.replace('_workers', ', num_workers=')}, batch 8: {rate:8.1f} samples/s")


def main(argv: list[str] | None = None) -> list[dict]:
    """Print the timings of each root; write them with --json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", action="append", default=None,
                        help="dataset root; repeat for several (default: $CITYSCAPES_DATASET)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--size", type=parse_size, default=(128, 256), help="HxW items are resized to")
    parser.add_argument("--cache-out", default=None, help="build the caches here (default: a temporary directory)")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for root in args.root or [None]:
        results.append(bench_root(root, args.split, args.size, args.items, args.cache_out))
        report(results[-1])
    if args.json:
        write_json(Path(args.json), {
            "command": "python -m bench.data " + " ".join(sys.argv[1:] if argv is None else argv),
            "git_commit": git_commit(), "machine": f"{platform.machine()} {platform.processor()}".strip(),
            "threads": 1, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "note": "per-item times are the best of 3 rounds, PNG and cache alternating; a shared 2-core machine",
            "results": results})
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
