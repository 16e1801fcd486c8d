"""Cityscapes multi-task dataset: image -> semantic trainIds, instance centroid vectors, disparity.

Reads the official layout (leftImg8bit, gtFine labelIds/instanceIds, disparity) under a root that
defaults to $CITYSCAPES_DATASET; real Cityscapes and the synthetic set go through the same code.
Items are the dict of docs/design.md; see data/targets.py for the conventions.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data.targets import (
    centroid_vectors,
    depth_target,
    instance_centroids,
    invalid_instance_ids,
    train_ids,
    unknown_label_ids,
)
from data.transforms import Augment, Sample, apply_geometry, hflip, jitter, normalize, resize, sample_geometry


class DataError(RuntimeError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


def one_line(error: BaseException) -> str:
    """The message of `error` as one line. An error raised in a DataLoader worker arrives re-raised with the
    worker's whole traceback in its message: its last line holds the original message, which is kept."""
    text = str(error).strip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    return re.sub(r"^[\w.]+(Error|Exception): ", "", last)


@dataclass(frozen=True)
class Frame:
    """One annotated frame: its name (e.g. "frankfurt_000000_000294"), city, split and files."""

    name: str
    city: str
    split: str
    image: Path
    label_ids: Path
    instance_ids: Path
    disparity: Path
    camera: Path

    @property
    def files(self) -> dict[str, Path]:
        """The files the loader reads, by role."""
        return {
            "image": self.image,
            "label_ids": self.label_ids,
            "instance_ids": self.instance_ids,
            "disparity": self.disparity,
        }


def resolve_root(root: str | os.PathLike | None) -> Path:
    """`root`, or $CITYSCAPES_DATASET when None; raise if neither names a directory."""
    if root is None:
        env = os.environ.get("CITYSCAPES_DATASET")
        if not env:
            raise DataError(
                "no dataset root given and $CITYSCAPES_DATASET is not set; pass root= or set it "
                "(e.g. to datasets/synthetic-cityscapes made by `python -m data.synthetic`)"
            )
        root = env
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"{path}: dataset root is not a directory")
    return path


def find_frames(root: Path, split: str) -> list[Frame]:
    """All frames of `split`, sorted by image path; raise if the split has none."""
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        found = sorted(p.name for p in (root / "leftImg8bit").glob("*") if p.is_dir())
        raise DataError(f"{image_dir}: no such split directory (splits found: {found or 'none'})")
    frames = []
    for image in sorted(_images(image_dir)):
        name = image.name[: -len("_leftImg8bit.png")]
        city = image.parent.name
        gt = root / "gtFine" / split / city / f"{name}_gtFine"
        frames.append(
            Frame(
                name=name,
                city=city,
                split=split,
                image=image,
                label_ids=Path(f"{gt}_labelIds.png"),
                instance_ids=Path(f"{gt}_instanceIds.png"),
                disparity=root / "disparity" / split / city / f"{name}_disparity.png",
                camera=root / "camera" / split / city / f"{name}_camera.json",
            )
        )
    if not frames:
        raise DataError(f"{image_dir}: no *_leftImg8bit.png files in its city folders")
    return frames


def _images(image_dir: Path) -> list[Path]:
    """Every */*_leftImg8bit.png under `image_dir`; a city folder that cannot be listed is an error (glob
    would skip it, and its frames would silently be missing from training and evaluation)."""
    images = []
    try:
        cities = sorted(os.scandir(image_dir), key=lambda e: e.name)
        for city in cities:
            if city.name.startswith(".") or not city.is_dir():
                continue
            try:
                with os.scandir(city.path) as entries:
                    images += [Path(e.path) for e in entries if e.name.endswith("_leftImg8bit.png")
                               and not e.name.startswith(".")]
            except OSError as e:
                raise DataError(f"{city.path}: cannot list this city folder ({e.strerror}); its frames would be "
                                "skipped") from e
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"{image_dir}: cannot list the split folder ({e.strerror})") from e
    return images


def missing_files(frames: list[Frame]) -> list[Path]:
    """Files the loader needs that do not exist."""
    return [path for f in frames for path in f.files.values() if not path.is_file()]


def read_png(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Decode a PNG with OpenCV, raising DataError that says whether it is missing or corrupt."""
    array = cv2.imread(str(path), flags)
    if array is None:
        if not path.is_file():
            raise DataError(f"{path}: file is missing")
        raise DataError(f"{path}: cannot decode the PNG (truncated or corrupt file)")
    return array


def _expect(array: np.ndarray, path: Path, dtypes: tuple, what: str) -> None:
    """Raise DataError unless `array` is single-channel with one of `dtypes`."""
    if array.ndim != 2 or array.dtype not in dtypes:
        raise DataError(f"{path}: expected {what}, got dtype {array.dtype} with shape {array.shape}")


def decode_frame(frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode the four PNGs of a frame: image (BGR uint8), labelIds, instanceIds, disparity."""
    image = read_png(frame.image, cv2.IMREAD_COLOR)
    label_ids = read_png(frame.label_ids)
    instance_ids = read_png(frame.instance_ids)
    disparity = read_png(frame.disparity)
    return image, label_ids, instance_ids, disparity


def read_sample(frame: Frame) -> Sample:
    """Decode and validate a frame; centroids are computed here, at file resolution."""
    image, label_ids, instance_ids, disparity = decode_frame(frame)
    _expect(label_ids, frame.label_ids, (np.uint8,), "8-bit single-channel label ids")
    _expect(instance_ids, frame.instance_ids, (np.uint8, np.uint16), "16-bit single-channel instance ids")
    _expect(disparity, frame.disparity, (np.uint16,), "16-bit single-channel disparity")
    size = image.shape[:2]
    for path, array in ((frame.label_ids, label_ids), (frame.instance_ids, instance_ids), (frame.disparity, disparity)):
        if array.shape != size:
            raise DataError(f"{path}: size {array.shape} differs from the image's {size} ({frame.image})")
    unknown = unknown_label_ids(label_ids)
    if unknown:
        raise DataError(f"{frame.label_ids}: unknown label ids {unknown} (not in cityscapesscripts' label table)")
    invalid = invalid_instance_ids(instance_ids)
    if invalid:
        shown = ", ".join(map(str, invalid[:10])) + (" ..." if len(invalid) > 10 else "")
        raise DataError(f"{frame.instance_ids}: instance ids {shown} name no known class with instances (an "
                        "object id is label_id * 1000 + k, for person, rider, car, truck, bus, caravan, trailer, "
                        "train, motorcycle or bicycle; other pixels hold their label id)")
    return Sample(
        image=image,  # BGR until converted after resizing (cheaper on the smaller image)
        label_ids=label_ids,
        instance_ids=instance_ids.astype(np.uint16, copy=False),
        disparity=disparity,
        centroids=instance_centroids(instance_ids),
    )


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
        from data.cache import open_cache  # data.cache imports this module

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
