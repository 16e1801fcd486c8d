"""Geometric and photometric augmentation that keeps every target consistent with the image.

A `Sample` holds the decoded ground-truth arrays on one pixel grid plus the table of instance
centroids in that grid's coordinates. Geometry (resize, crop, flip) is done here with OpenCV and
numpy indexing rather than albumentations because the centroid table has to follow each step
exactly (pixel-centre convention, crop offsets, x -> W - 1 - x); the instance vectors are built
only at the end from the final id map and the moved centroids, so they are exact by construction.
Photometric jitter touches the image alone and comes from albumentations, imported only when jitter is
used and never allowed to ask the package index for a newer version (nothing here touches the network).
"""

import argparse
import os
from dataclasses import dataclass, replace
from functools import cache

import cv2
import numpy as np

from data.targets import map_coordinate

# ImageNet statistics, RGB order: the backbone's expected input.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# Per-channel scalars for OpenCV: numpy broadcasting over a last axis of 3 is several times slower.
_SCALE = tuple(float(v) for v in 1.0 / (255.0 * STD)) + (0.0,)
_SHIFT = tuple(float(v) for v in MEAN / STD) + (0.0,)


@dataclass(frozen=True)
class Augment:
    """Random training augmentation: flip, scale range, crop (H, W) and colour jitter."""

    flip: bool = True
    scale: tuple[float, float] | None = None
    crop: tuple[int, int] | None = None
    jitter: bool = False


@dataclass
class Sample:
    """Ground-truth arrays on one (H, W) grid and the instance centroids in that grid."""

    image: np.ndarray  # (H, W, 3) RGB: uint8 until normalize(), then float32 (0 = mean colour)
    label_ids: np.ndarray  # (H, W) uint8 Cityscapes label ids
    instance_ids: np.ndarray  # (H, W) uint16 instanceIds
    disparity: np.ndarray  # (H, W) uint16 raw PNG values (0 = invalid)
    centroids: dict[int, tuple[float, float]]  # instanceId -> (x, y) in this grid
    disparity_scale: float = 1.0  # decoded disparity is multiplied by this (W_now / W_file)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the grid."""
        return self.label_ids.shape


@dataclass(frozen=True)
class Geometry:
    """One draw of the geometric augmentation: resize to `size`, crop box, flip."""

    size: tuple[int, int]  # (H, W) after resizing (base size times scale)
    crop: tuple[int, int, int, int] | None = None  # (top, left, H, W); may reach outside: padded
    flip: bool = False


def resize(sample: Sample, size: tuple[int, int]) -> Sample:
    """Resize to (H, W): area/bilinear for the image, nearest for labels, ids and disparity."""
    h, w = size
    h0, w0 = sample.shape
    if (h, w) == (h0, w0):
        return sample
    # INTER_NEAREST_EXACT samples source pixel floor((x + 0.5) * W0 / W): the pixel-centre convention.
    nearest = cv2.INTER_NEAREST_EXACT
    smooth = cv2.INTER_AREA if h * w < h0 * w0 else cv2.INTER_LINEAR
    centroids = {
        k: (map_coordinate(x, w0, w), map_coordinate(y, h0, h)) for k, (x, y) in sample.centroids.items()
    }
    return Sample(
        image=cv2.resize(sample.image, (w, h), interpolation=smooth),
        label_ids=cv2.resize(sample.label_ids, (w, h), interpolation=nearest),
        instance_ids=cv2.resize(sample.instance_ids, (w, h), interpolation=nearest),
        disparity=cv2.resize(sample.disparity, (w, h), interpolation=nearest),
        centroids=centroids,
        disparity_scale=sample.disparity_scale * w / w0,
    )


def _crop_array(a: np.ndarray, top: int, left: int, h: int, w: int, fill) -> np.ndarray:
    """Window [top, top + h) x [left, left + w) of `a`, filled with `fill` where it leaves `a`."""
    out = np.full((h, w) + a.shape[2:], fill, dtype=a.dtype)
    y0, y1 = max(top, 0), min(top + h, a.shape[0])
    x0, x1 = max(left, 0), min(left + w, a.shape[1])
    if y0 < y1 and x0 < x1:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = a[y0:y1, x0:x1]
    return out


def crop(sample: Sample, top: int, left: int, h: int, w: int) -> Sample:
    """Crop an (h, w) window at (top, left), padding outside the image.

    Fill: label id 0 (unlabeled -> trainId 255), instance id 0, disparity 0 (invalid, not sky),
    image 0 (the mean colour once the image is normalised).
    """
    centroids = {k: (x - left, y - top) for k, (x, y) in sample.centroids.items()}
    return Sample(
        image=_crop_array(sample.image, top, left, h, w, 0),
        label_ids=_crop_array(sample.label_ids, top, left, h, w, 0),
        instance_ids=_crop_array(sample.instance_ids, top, left, h, w, 0),
        disparity=_crop_array(sample.disparity, top, left, h, w, 0),
        centroids=centroids,
        disparity_scale=sample.disparity_scale,
    )


def hflip(sample: Sample) -> Sample:
    """Mirror left-right; centroids move to x' = W - 1 - x (so dx is negated)."""
    w = sample.shape[1]
    return Sample(
        image=sample.image[:, ::-1],
        label_ids=sample.label_ids[:, ::-1],
        instance_ids=sample.instance_ids[:, ::-1],
        disparity=sample.disparity[:, ::-1],
        centroids={k: (w - 1 - x, y) for k, (x, y) in sample.centroids.items()},
        disparity_scale=sample.disparity_scale,
    )


def normalize(sample: Sample) -> Sample:
    """Convert the uint8 RGB image to float32, ImageNet mean/std normalised."""
    image = np.ascontiguousarray(sample.image, dtype=np.float32)
    cv2.multiply(image, _SCALE, dst=image)
    cv2.subtract(image, _SHIFT, dst=image)
    return replace(sample, image=image)


def sample_geometry(rng: np.random.Generator, augment: Augment, size: tuple[int, int]) -> Geometry:
    """Draw scale, crop position and flip for one item whose base size is (H, W)."""
    h, w = size
    if augment.scale is not None:
        s = rng.uniform(*augment.scale)
        h, w = max(1, round(h * s)), max(1, round(w * s))
    box = None
    if augment.crop is not None:
        ch, cw = augment.crop
        # Offsets range over [min(0, H - ch), max(0, H - ch)]: a crop larger than the image places
        # the image at a random position inside the padded window.
        top = int(rng.integers(min(0, h - ch), max(0, h - ch) + 1))
        left = int(rng.integers(min(0, w - cw), max(0, w - cw) + 1))
        box = (top, left, ch, cw)
    flip = bool(augment.flip and rng.random() < 0.5)
    return Geometry(size=(h, w), crop=box, flip=flip)


def apply_geometry(sample: Sample, geometry: Geometry) -> Sample:
    """Resize, then crop, then flip (the image must already be normalised if it will be padded)."""
    sample = resize(sample, geometry.size)
    if geometry.crop is not None:
        sample = crop(sample, *geometry.crop)
    if geometry.flip:
        sample = hflip(sample)
    return sample


@cache
def _jitter_transform():
    """albumentations' ColorJitter. `import albumentations` checks PyPI for a newer version (a DNS query and
    an HTTPS request, up to 2 s offline) unless NO_ALBUMENTATIONS_UPDATE is set: set it before the import."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    return A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=1.0)


def jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness/contrast/saturation/hue on a uint8 RGB image, seeded from `rng`."""
    # Seeding the transform from our generator keeps results reproducible under torch seeding.
    transform = _jitter_transform()
    transform.set_random_seed(int(rng.integers(2**31)))
    return transform(image=np.ascontiguousarray(image))["image"]


def parse_size(text: str, minimum: int = 1) -> tuple[int, int]:
    """'128x256' -> (128, 256), for a command line's --size (argparse's error on anything else)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 128x256, got {text!r}") from None
    if h < minimum or w < minimum:
        raise argparse.ArgumentTypeError(f"size must be at least {minimum}x{minimum}, got {text!r}")
    return h, w
