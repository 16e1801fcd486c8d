"""Cityscapes multi-task dataset: image -> semantic trainIds, instance centroid vectors, disparity.

Reads the official layout (leftImg8bit, gtFine labelIds/instanceIds, disparity) under a root that
defaults to $CITYSCAPES_DATASET; real Cityscapes and the synthetic set go through the same code.
Items are the dict of docs/design.md; see data/targets.py for the conventions.
"""

import os

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data.cache import open_cache
from data.frames import (  # noqa: F401 (re-exported: the readers of the on-disk layout live in data/frames.py)
    DataError,
    Frame,
    decode_frame,
    find_frames,
    missing_files,
    one_line,
    read_png,
    read_sample,
    resolve_root,
)
from data.targets import centroid_vectors, depth_target, train_ids
from data.transforms import Augment, Sample, apply_geometry, hflip, jitter, normalize, resize, sample_geometry

# The frame readers (data/frames.py) are part of this module's interface too.
__all__ = ["CityscapesMultiTask", "DataError", "Frame", "build_item", "decode_frame", "find_frames", "item_rng",
           "missing_files", "read_png", "read_sample", "resolve_root"]


def build_item(sample: Sample) -> dict[str, torch.Tensor]:
    """The item dict (docs/design.md) from a normalised, final-geometry sample."""
    vectors, mask = centroid_vectors(sample.instance_ids, sample.centroids)
    depth, depth_mask = depth_target(sample.disparity, sample.label_ids, sample.disparity_scale)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1))),  # (3, H, W)
        "semantic": torch.from_numpy(train_ids(sample.label_ids).astype(np.int64)),  # (H, W)
        "instance": torch.from_numpy(vectors),  # (2, H, W)
        "instance_mask": torch.from_numpy(mask),  # (H, W)
        "depth": torch.from_numpy(depth[None]),  # (1, H, W)
        "depth_mask": torch.from_numpy(np.ascontiguousarray(depth_mask)),  # (H, W)
    }


def _as_augment(augment: bool | Augment | None) -> Augment | None:
    """False/None: no augmentation; True: random horizontal flip only; or an Augment."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return Augment(flip=True)
    if isinstance(augment, Augment):
        return augment
    raise TypeError(f"augment must be a bool or data.transforms.Augment, got {type(augment).__name__}")


def item_rng() -> np.random.Generator:
    """The generator of one item's augmentation, seeded from torch's RNG (reproducible under
    torch.manual_seed, distinct per DataLoader worker)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


class CityscapesMultiTask(Dataset):
    """Cityscapes frames as dicts of image and semantic / instance / depth targets."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        size: tuple[int, int] | None = None,
        augment: bool | Augment = False,
        limit: int | None = None,
        cache: str | os.PathLike | None = "auto",
    ):
        self.root = resolve_root(root)
        self.split = split
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.augment = _as_augment(augment)
        frames = find_frames(self.root, split)
        self.frames: list[Frame] = frames if limit is None else frames[:limit]
        missing = missing_files(self.frames)
        if missing:
            shown = "\n  ".join(str(p) for p in missing[:10])
            more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise DataError(f"{len(missing)} missing file(s) in split {split!r} of {self.root}:\n  {shown}{more}")
        # "auto": the Tiny cache (data/cache.py) of this split and size when one was built, "off": the PNGs.
        self.cache = open_cache(cache, self.root, split, self.size, self.augment, frames)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        aug = self.augment
        # One generator per item, seeded from torch's RNG: reproducible under torch.manual_seed and
        # distinct per DataLoader worker (torch seeds each worker differently).
        rng = None if aug is None else item_rng()
        if self.cache is not None:  # the PNG path's state after resizing, RGB (the cache needs a fixed size)
            sample = self.cache.sample(index)
            geometry = None if aug is None else sample_geometry(rng, aug, self.size)
        else:
            sample = read_sample(self.frames[index])
            size = self.size or sample.shape
            geometry = None if aug is None else sample_geometry(rng, aug, size)
            # Resize first so jitter and normalisation work on the final number of pixels.
            sample = resize(sample, size if geometry is None else geometry.size)
            sample.image = cv2.cvtColor(sample.image, cv2.COLOR_BGR2RGB)
        if aug is None:
            return build_item(normalize(sample))
        if aug.jitter:
            sample.image = jitter(sample.image, rng)
        # Padding happens on the normalised image so that it gets the mean colour (0).
        return build_item(apply_geometry(normalize(sample), geometry))

    def fixed_item(self, index: int, flip: bool = False) -> dict[str, torch.Tensor]:
        """Item `index` without random augmentation, mirrored when `flip`: what `__getitem__` returns when
        its draw is that flip and nothing else (fixed size, no crop, scale or jitter). data/resident.py."""
        return self.fixed_items(index, mirrored=flip)[-1]

    def fixed_items(self, index: int, mirrored: bool = True) -> list[dict[str, torch.Tensor]]:
        """[`fixed_item(index)`, `fixed_item(index, flip=True)`] from one read of the frame (without the
        mirrored one when `mirrored` is false)."""
        if self.cache is not None:
            sample = self.cache.sample(index)
        else:
            sample = read_sample(self.frames[index])
            sample = resize(sample, self.size or sample.shape)
            sample.image = cv2.cvtColor(sample.image, cv2.COLOR_BGR2RGB)
        sample = normalize(sample)
        return [build_item(sample)] + ([build_item(hflip(sample))] if mirrored else [])
