"""Writing frames in the official Cityscapes layout with real city names, then `DIR/.complete`.

Every frame is rendered from its own generator seeded by (seed, split, index), so the bytes do not
depend on the worker count. `DIR/.synthetic` records how the set was made (JSON: profile, seed, size,
train, val, and test when the set has a test split); an empty marker, as older sets have, means profile v1.
Unlike real Cityscapes, the synthetic test split is annotated: it is the held-out split that comparisons
score on (docs/comparisons.md), while val serves selection.
"""

import json
import os
import shutil
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

from data.labels import ID_TO_COLOR
from data.synthetic.profile import DEFAULT_PROFILE, MARKER, get_profile
from data.synthetic.render import render_frame
from infra.atomic import write_json

TRAIN_CITIES = (
    "aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
    "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm", "weimar", "zurich",
)  # fmt: skip
VAL_CITIES = ("frankfurt", "lindau", "munster")
TEST_CITIES = ("berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich")  # Cityscapes' test cities
CITIES = {"train": TRAIN_CITIES, "val": VAL_CITIES, "test": TEST_CITIES}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}  # each split its own random streams: held-out frames
# Annotated Cityscapes frames are the 20th of each 30-frame snippet.
FRAME_NUMBER = 19

_COLOR_LUT_BGRA = np.zeros((256, 4), np.uint8)
for _id, (_r, _g, _b) in ID_TO_COLOR.items():
    if 0 <= _id < 256:
        _COLOR_LUT_BGRA[_id] = (_b, _g, _r, 255)


def frame_name(split: str, index: int) -> tuple[str, str]:
    """(city, name) of frame `index` of a split: cities in turn, sequence numbers within a city."""
    cities = CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_{FRAME_NUMBER:06d}"


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"{path}: could not write PNG")


def write_frame(out: Path, split: str, index: int, seed: int, size: tuple[int, int],
                profile: str = DEFAULT_PROFILE) -> None:
    """Render frame `index` of `split` of generator profile `profile` from its own seed and write its files."""
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    frame = render_frame(rng, *size, get_profile(profile))
    city, name = frame_name(split, index)
    gt = out / "gtFine" / split / city / f"{name}_gtFine"
    _write_png(out / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", frame["image"][..., ::-1])
    _write_png(Path(f"{gt}_labelIds.png"), frame["label_ids"])
    _write_png(Path(f"{gt}_instanceIds.png"), frame["instance_ids"])
    _write_png(Path(f"{gt}_color.png"), _COLOR_LUT_BGRA[frame["label_ids"]])
    Path(f"{gt}_polygons.json").write_text(json.dumps(frame["polygons"], indent=4))
    _write_png(out / "disparity" / split / city / f"{name}_disparity.png", frame["disparity"])
    (out / "camera" / split / city / f"{name}_camera.json").write_text(json.dumps(frame["camera"], indent=4))


def _write_job(job: tuple) -> None:
    write_frame(*job)


def _prepare(out: Path, record: dict) -> None:
    """Create `out` and record how it is made, refusing to overwrite anything that is not an earlier
    synthetic set."""
    marker = out / MARKER
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise SystemExit(f"{out}: exists and is not a synthetic Cityscapes set; refusing to overwrite it")
    (out / ".complete").unlink(missing_ok=True)
    for kind in ("leftImg8bit", "gtFine", "disparity", "camera"):
        shutil.rmtree(out / kind, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, record)


def generate(
    out: str | os.PathLike,
    train: int = 300,
    val: int = 100,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
    workers: int | None = None,
    profile: str = DEFAULT_PROFILE,
    test: int = 0,
) -> Path:
    """Write a synthetic Cityscapes set of generator profile `profile` under `out` (official layout),
    then `out/.complete`."""
    out = Path(out)
    get_profile(profile)  # an unknown name fails before anything is written
    record = {"profile": profile, "seed": seed, "size": list(size), "train": train, "val": val}
    _prepare(out, record | ({"test": test} if test else {}))  # no test key: the marker of sets made before it
    counts = {"train": train, "val": val} | ({"test": test} if test else {})
    for split, n in counts.items():
        for index in range(min(n, len(CITIES[split]))):
            city, _ = frame_name(split, index)
            for kind in ("leftImg8bit", "gtFine", "disparity", "camera"):
                (out / kind / split / city).mkdir(parents=True, exist_ok=True)
    jobs = [(out, split, i, seed, tuple(size), profile) for split, n in counts.items() for i in range(n)]
    workers = workers or len(os.sched_getaffinity(0))
    if workers <= 1:
        for job in jobs:
            _write_job(job)
    else:
        with Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_job, jobs, chunksize=4):
                pass
    (out / ".complete").touch()
    return out
