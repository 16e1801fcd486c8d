"""The official Cityscapes layout on disk: the dataset root, its frames and their decoded files.

A frame is one image with its gtFine label and instance ids and its disparity; `read_sample` decodes
one at file resolution. The dataset (data/cityscapes.py) and the Tiny cache (data/cache.py) both read
frames through here.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data.targets import instance_centroids, invalid_instance_ids, unknown_label_ids
from data.transforms import Sample


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


def root_setting(*given: str | os.PathLike | None) -> str | None:
    """The dataset root: the first of `given` that is set (e.g. --root, then the config's data.root), else
    $CITYSCAPES_DATASET; None when none is."""
    for root in given:
        if root is not None and str(root):
            return str(root)
    return os.environ.get("CITYSCAPES_DATASET") or None


def resolve_root(root: str | os.PathLike | None) -> Path:
    """`root`, or $CITYSCAPES_DATASET when None; raise if neither names a directory."""
    if root is None:
        root = root_setting()
        if root is None:
            raise DataError(
                "no dataset root given and $CITYSCAPES_DATASET is not set; pass root= or set it "
                "(e.g. to datasets/synthetic-cityscapes made by `python -m data.synthetic`)"
            )
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
