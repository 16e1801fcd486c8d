"""Synthetic Cityscapes: street scenes from a pinhole stereo camera, written in the official layout.

`python -m data.synthetic --out DIR [--train N] [--val N] [--test N] [--size HxW] [--seed S] [--workers K]
[--profile v1|calibrated]` writes leftImg8bit, gtFine (labelIds, instanceIds, color, polygons),
disparity and camera files with real city names, then an empty `DIR/.complete`. `DIR/.synthetic`
records the profile, seed, size and frame counts. Profile v1 (the default) is the generator every
committed result was trained on; `calibrated` is closer to real Cityscapes' class shares.
"""

import argparse
import sys
import time

from data.synthetic.profile import DEFAULT_PROFILE, PROFILES
from data.synthetic.writer import generate
from data.transforms import parse_size


def _count(text: str) -> int:
    """argparse type: a number of frames, 0 or more."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of frames, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {n}")
    return n


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--train", type=_count, default=300, help="number of train frames")
    parser.add_argument("--val", type=_count, default=100, help="number of val frames")
    parser.add_argument("--test", type=_count, default=0,
                        help="number of annotated test frames (default 0: no test split), the held-out split")
    parser.add_argument("--size", type=lambda text: parse_size(text, minimum=16), default=(256, 512),
                        help="HxW, e.g. 256x512")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=_workers, default=None, help="processes (default: all usable cores)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE,
                        help=f"scene parameters (default {DEFAULT_PROFILE}; see data/synthetic/profile.py)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        out = generate(args.out, args.train, args.val, args.size, args.seed, args.workers, args.profile,
                       args.test)
    except (OSError, ValueError) as e:  # --out a file, unwritable, a foreign folder...
        sys.exit(f"error: --out {args.out}: {e}")
    test = f" + {args.test} test" if args.test else ""
    print(f"wrote {args.train} train + {args.val} val{test} frames at {args.size[0]}x{args.size[1]} to {out} "
          f"(profile {args.profile}) in {time.perf_counter() - start:.1f} s", file=sys.stderr)  # fmt: skip
