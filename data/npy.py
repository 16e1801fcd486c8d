"""The preprocessed 2-task Cityscapes layout of nash-mtl, FAMO and LibMTL (docs/protocols.md).

    ROOT/{train,val}/image/N.npy     (H, W, 3) float, RGB in [0, 1]
    ROOT/{train,val}/label_7/N.npy   (H, W) 7-class labels, -1 = ignore (LibMTL names the folder `label`)
    ROOT/{train,val}/depth/N.npy     (H, W, 1) depth; 0 = no ground truth

N runs 0..n-1. `NpyTwoTask` reads it; items are dicts keyed by the protocol's task names (tasks.py):
`image` float32 (3, H, W) as stored (the papers feed it unnormalised), `seg7` int64 (H, W) with -1 mapped to
255 (IGNORE_INDEX), `depth_abs` float32 (1, H, W), `depth_abs_mask` bool (H, W) = depth != 0 (the papers' mask).
Training augmentation is the papers' (MTAN's RandomScaleCrop, then a horizontal flip): a scale s from
(1.0, 1.2, 1.5), a random crop of H/s x W/s resized back to H x W (bilinear image, nearest labels and
depth), depth divided by s.

    python -m data.npy convert SRC OUT [--size 128x256] [--label-dir label_7] [--depth pixels|png]
    python -m data.npy synthetic OUT [--train 8 --val 4 --size 32x64 --seed 0]   # synthetic set -> npy

The converter maps every evaluated Cityscapes class (trainId 0..18) to its cityscapesscripts category
(flat, construction, object, nature, sky, human, vehicle = 0..6: the 7 categories and their order in the MTAN
paper's Table 1; the integers and leaving out non-evaluated classes are our reading) and everything else to -1,
and writes as depth (`--depth pixels`, the default) the disparity in pixels at the output width (PNG value
p > 0: (p - 1) / 256 * W_out / W_file; 0 where invalid), or (`--depth png`) the raw 16-bit PNG value / 65535 (0 where
p = 0), which fits the value range reported for the MTAN files (lorenmt/mtan issue #25: 0 to 0.4922 against PNG
values 0 to 32257). How the MTAN authors made their files is not published: see docs/protocols.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from data.cityscapes import DataError, item_rng
from data.labels import _LABELS, ID_TO_TRAINID, IGNORE_INDEX
from data.transforms import parse_size
from tasks import SEG7_CLASS_NAMES

LABEL_DIRS = ("label_7", "label")  # nash-mtl / FAMO, LibMTL
DEPTH_UNITS = ("pixels", "png")  # disparity in pixels at the output width; raw PNG value / 65535
SCALES = (1.0, 1.2, 1.5)  # MTAN's RandomScaleCrop
CATEGORY_NAMES = SEG7_CLASS_NAMES  # cityscapesscripts categoryId 1..7 (flat ... vehicle) as labels 0..6

# trainId -> 7-class label (categoryId - 1), 255 (ignore) for trainId 255.
TRAINID_TO_SEG7 = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _lb in _LABELS:
    if 0 <= _lb.trainId < IGNORE_INDEX:
        TRAINID_TO_SEG7[_lb.trainId] = _lb.categoryId - 1


def is_npy_root(root: Path) -> bool:
    """Whether `root` looks like the npy layout (a split folder holding image/)."""
    return any((Path(root) / split / "image").is_dir() for split in ("train", "val"))


def label_dir(root: Path, split: str) -> Path:
    """The split's label folder (label_7 or label); a DataError when it has none or both."""
    found = [Path(root) / split / d for d in LABEL_DIRS if (Path(root) / split / d).is_dir()]
    if not found:
        raise DataError(f"{Path(root) / split}: no label_7/ or label/ folder: not the npy 2-task layout")
    if len(found) > 1:
        raise DataError(f"{Path(root) / split}: both label_7/ and label/ folders: a mixed layout, keep one")
    return found[0]


def split_size(root: Path, split: str) -> int:
    """Number of frames of a split, checking that image/, labels and depth/ hold the same 0..n-1 files."""
    base = Path(root) / split
    if (Path(root) / "leftImg8bit").is_dir():
        raise DataError(f"{root}: holds both leftImg8bit/ (official layout) and {split}/image/ (npy layout): "
                        "a mixed layout, keep one")
    folders = {"image": base / "image", "labels": label_dir(root, split), "depth": base / "depth"}
    names = {}
    for what, folder in folders.items():
        if not folder.is_dir():
            raise DataError(f"{folder}: missing: not the npy 2-task layout")
        names[what] = {p.name for p in folder.glob("*.npy")}
    n = len(names["image"])
    want = {f"{i}.npy" for i in range(n)}
    for what, got in names.items():
        if got != want:
            odd = sorted(got ^ want)[:3]
            raise DataError(f"{folders[what]}: expected files 0.npy..{n - 1}.npy like image/, differs at {odd}")
    if n == 0:
        raise DataError(f"{base / 'image'}: no frames")
    return n


def read_frame(root: Path, split: str, index: int, labels: Path | None = None) -> tuple[np.ndarray, ...]:
    """(image (H, W, 3) float32, labels (H, W) int64 with -1 ignore, depth (H, W, 1) float32), checked."""
    base = Path(root) / split
    labels = labels or label_dir(root, split)
    paths = (base / "image" / f"{index}.npy", labels / f"{index}.npy", base / "depth" / f"{index}.npy")
    try:
        image, label, depth = (np.load(p, allow_pickle=False) for p in paths)
    except (OSError, ValueError) as e:
        raise DataError(f"{base}: frame {index} is unreadable ({e})") from e
    h, w = label.shape[:2] if label.ndim == 2 else (None, None)
    if image.ndim != 3 or image.shape[2] != 3 or label.ndim != 2 or depth.shape not in ((h, w, 1), (h, w)) \
            or image.shape[:2] != (h, w):
        raise DataError(f"{base}: frame {index} has shapes image {image.shape}, labels {label.shape}, depth "
                        f"{depth.shape}; expected (H, W, 3), (H, W), (H, W, 1)")
    label = label.astype(np.int64)
    bad = (label < -1) | (label >= len(CATEGORY_NAMES))
    if bad.any():
        raise DataError(f"{paths[1]}: labels outside -1..{len(CATEGORY_NAMES) - 1} (e.g. {int(label[bad][0])})")
    return image.astype(np.float32), label, depth.reshape(h, w, 1).astype(np.float32)


class NpyTwoTask(Dataset):
    """One split of the npy layout; `augment`: the papers' random scale-crop and flip (training)."""

    def __init__(self, root: str | Path, split: str, size: tuple[int, int] | None = None, augment: bool = False,
                 limit: int | None = None) -> None:
        self.root, self.split, self.augment = Path(root), split, augment
        if not (self.root / split).is_dir():
            official = (self.root / "leftImg8bit").is_dir()
            hint = " (an official Cityscapes tree: set data.format=cityscapes)" if official else ""
            raise DataError(f"{self.root / split}: no such folder; the npy layout holds {split}/image, {split}/label_7 "
                            f"and {split}/depth{hint}")
        n = split_size(self.root, split)
        self.labels = label_dir(self.root, split)
        self.n = min(n, limit) if limit else n
        image, _, _ = read_frame(self.root, split, 0, self.labels)
        if size is not None and tuple(size) != image.shape[:2]:
            raise DataError(f"{self.root / split}: frames are {image.shape[0]}x{image.shape[1]}, data.size is "
                            f"{size[0]}x{size[1]}; the npy layout is read at its own size (set data.size to it)")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, label, depth = read_frame(self.root, self.split, index, self.labels)
        img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # (3, H, W)
        seg = torch.from_numpy(label)  # (H, W)
        dep = torch.from_numpy(np.ascontiguousarray(depth.transpose(2, 0, 1)))  # (1, H, W)
        if self.augment:
            img, seg, dep = scale_crop_flip(img, seg, dep, item_rng())
        seg = torch.where(seg < 0, IGNORE_INDEX, seg)
        return {"image": img, "seg7": seg, "depth_abs": dep, "depth_abs_mask": dep[0] != 0}


def scale_crop_flip(img: torch.Tensor, seg: torch.Tensor, dep: torch.Tensor,
                    rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """MTAN's RandomScaleCrop (crop H/s x W/s, resize back, depth / s), then a horizontal flip with p = 0.5."""
    h, w = img.shape[-2:]
    s = SCALES[int(rng.integers(len(SCALES)))]
    ch, cw = int(h / s), int(w / s)
    i, j = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    img = F.interpolate(img[None, :, i:i + ch, j:j + cw], size=(h, w), mode="bilinear", align_corners=True)[0]
    seg = F.interpolate(seg[None, None, i:i + ch, j:j + cw].float(), size=(h, w), mode="nearest")[0, 0].long()
    dep = F.interpolate(dep[None, :, i:i + ch, j:j + cw], size=(h, w), mode="nearest")[0] / s
    if rng.random() < 0.5:
        img, seg, dep = img.flip(-1), seg.flip(-1), dep.flip(-1)
    return img, seg, dep


def write_frame(out: Path, split: str, index: int, image: np.ndarray, label: np.ndarray, depth: np.ndarray,
                labels: str = "label_7") -> None:
    """Write one frame of the npy layout (image (H, W, 3) in [0, 1], labels -1..6, depth (H, W))."""
    for sub, array in (("image", image.astype(np.float32)), (labels, label.astype(np.float32)),
                       ("depth", depth.reshape(*depth.shape[:2], 1).astype(np.float32))):
        folder = Path(out) / split / sub
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{index}.npy", array)


def convert(src: Path, out: Path, size: tuple[int, int] = (128, 256), labels: str = "label_7",
            splits: tuple[str, ...] = ("train", "val"), depth_units: str = "pixels") -> dict[str, int]:
    """Official Cityscapes layout under `src` -> npy layout under `out`; frames per split."""
    from data.cityscapes import find_frames, read_sample
    from data.transforms import resize

    if labels not in LABEL_DIRS:
        raise DataError(f"--label-dir must be one of {', '.join(LABEL_DIRS)}, got {labels!r}")
    if depth_units not in DEPTH_UNITS:
        raise DataError(f"--depth must be one of {', '.join(DEPTH_UNITS)}, got {depth_units!r}")
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: exists and is not empty; choose a new folder")
    counts = {}
    for split in splits:
        frames = find_frames(src, split)
        for i, frame in enumerate(frames):
            sample = read_sample(frame)
            w_file = sample.shape[1]
            sample = resize(sample, size)
            seg = TRAINID_TO_SEG7[ID_TO_TRAINID[sample.label_ids]].astype(np.int64)
            seg[seg == IGNORE_INDEX] = -1
            raw = sample.disparity.astype(np.int64)  # 16-bit PNG values, read as int before arithmetic
            if depth_units == "png":  # the value range of the MTAN files (docs/protocols.md, "Depth")
                depth = raw / 65535.0
            else:
                depth = np.where(raw > 0, (raw - 1) / 256.0, 0.0) * (size[1] / w_file)
            write_frame(out, split, i, sample.image.astype(np.float32) / 255.0, seg, depth, labels)
        counts[split] = len(frames)
    return counts


def synthetic(out: Path, train: int = 8, val: int = 4, size: tuple[int, int] = (32, 64), seed: int = 0,
              labels: str = "label_7") -> dict[str, int]:
    """A synthetic set in the npy layout: the project's synthetic generator (official layout, at twice the
    size) converted with `convert`."""
    from data.synthetic.writer import generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "official", train=train, val=val, size=(2 * size[0], 2 * size[1]), seed=seed,
                 workers=1)
        return convert(Path(tmp) / "official", out, size, labels)


def class_shares(root: Path, split: str) -> tuple[int, np.ndarray, int, int]:
    """(frames, pixels per class (7,) plus ignore at index 7, valid depth pixels, all pixels) of a split."""
    n = split_size(root, split)
    labels = label_dir(root, split)
    counts = np.zeros(len(CATEGORY_NAMES) + 1, dtype=np.int64)
    valid = total = 0
    for i in range(n):
        _, label, depth = read_frame(root, split, i, labels)
        counts += np.bincount(np.where(label < 0, len(CATEGORY_NAMES), label).ravel(),
                              minlength=len(CATEGORY_NAMES) + 1)
        valid += int(np.count_nonzero(depth))
        total += label.size
    return n, counts, valid, total


def check(root: Path, splits: list[str] | None = None) -> int:
    """`python -m data.check ROOT` for the npy layout: frame counts and class shares per split; 1 on a problem."""
    splits = splits or ["train", "val"]
    for split in splits:
        try:
            n, counts, valid, total = class_shares(root, split)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        shares = ", ".join(f"{name} {100.0 * c / total:.1f}%" for name, c in zip((*CATEGORY_NAMES, "ignore"), counts))
        print(f"{split}: {n} frames (npy 2-task layout, {labels_name(root, split)}/), depth valid on "
              f"{100.0 * valid / total:.1f}% of pixels")
        print(f"  class shares: {shares}")
    print("OK")
    return 0


def labels_name(root: Path, split: str) -> str:
    return label_dir(root, split).name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the npy 2-task Cityscapes layout.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="official Cityscapes layout -> npy layout")
    c.add_argument("src", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--size", type=lambda text: parse_size(text, minimum=8), default=(128, 256))
    c.add_argument("--label-dir", default="label_7", choices=LABEL_DIRS)
    c.add_argument("--depth", default="pixels", choices=DEPTH_UNITS,
                   help="pixels: disparity in pixels at the output width; png: raw PNG value / 65535")
    s = sub.add_parser("synthetic", help="a synthetic set in the npy layout")
    s.add_argument("out", type=Path)
    s.add_argument("--train", type=int, default=8)
    s.add_argument("--val", type=int, default=4)
    s.add_argument("--size", type=lambda text: parse_size(text, minimum=8), default=(32, 64))
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label-dir", default="label_7", choices=LABEL_DIRS)
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            counts = convert(args.src, args.out, args.size, args.label_dir, depth_units=args.depth)
        else:
            if args.out.exists() and any(args.out.iterdir()):
                raise DataError(f"{args.out}: exists and is not empty; choose a new folder")
            counts = synthetic(args.out, args.train, args.val, args.size, args.seed, args.label_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v} frames" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
