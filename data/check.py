"""Check a Cityscapes tree: `python -m data.check ROOT [--split S ...]`.

Per split (by default train and val, which training needs, plus any other found): frame count,
missing or unreadable files, wrong bit depths or sizes, unknown label ids, instance ids of classes
without instances or of unknown classes, and the share of valid disparity pixels. Exits with status 1
and names the files on any problem, a missing split included.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.cityscapes import DataError, Frame, find_frames, read_sample

REQUIRED_SPLITS = ("train", "val")  # what train.py reads by default (data.train_split, data.val_split)


def check_frame(frame: Frame) -> tuple[list[str], int, int]:
    """Problems of one frame (each naming its file), and its valid and total disparity pixels."""
    problems = [f"{path}: file is missing" for path in frame.files.values() if not path.is_file()]
    if problems:
        return problems, 0, 0
    try:
        sample = read_sample(frame)
    except DataError as error:
        return [str(error)], 0, 0
    return [], int(np.count_nonzero(sample.disparity)), sample.disparity.size


def check_split(root: Path, split: str, show_progress: bool = True) -> tuple[list[str], str]:
    """Problems found in a split and a one-line summary."""
    try:
        frames = find_frames(root, split)
    except DataError as error:
        return [str(error)], f"{split}: no frames"
    problems: list[str] = []
    valid = total = 0
    for frame in tqdm(frames, desc=split, disable=not show_progress, leave=False):
        found, v, t = check_frame(frame)
        problems += found
        valid += v
        total += t
    cities = len({f.city for f in frames})
    coverage = f"{100.0 * valid / total:.1f}%" if total else "n/a"
    summary = f"{split}: {len(frames)} frames in {cities} cities, disparity valid on {coverage} of pixels"
    if problems:
        summary += f", {len(problems)} problem(s)"
    return problems, summary


def main(argv: list[str] | None = None) -> int:
    """Check the splits and print a report; return the exit status."""
    parser = argparse.ArgumentParser(description="Check a Cityscapes dataset tree.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--split", action="append",
                        help="split(s) to check (default: train, val and every other split found)")
    args = parser.parse_args(argv)
    if not (args.root / "leftImg8bit").is_dir():
        print(f"{args.root}: no leftImg8bit folder, not a Cityscapes tree", file=sys.stderr)
        return 1
    found = sorted(p.name for p in (args.root / "leftImg8bit").iterdir() if p.is_dir())
    splits = args.split or [*REQUIRED_SPLITS, *(s for s in found if s not in REQUIRED_SPLITS)]
    failed = False
    for split in splits:
        problems, summary = check_split(args.root, split, show_progress=sys.stderr.isatty())
        print(summary)
        for line in problems:
            print(f"  {line}")
        failed |= bool(problems)
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
