"""Tiny-Cityscapes cache: each split decoded and resized once into memory-mappable arrays.

    python -m data.cache ROOT --size 128x256 [--out DIR] [--splits train val] [--workers N]

writes DIR/<H>x<W>/<split>/ (DIR defaults to ROOT/cache) for each split; `CityscapesMultiTask`
reads it instead of the PNGs (`cache="auto"`: when it exists for the dataset's size; `cache=DIR`:
required; `cache="off"`: never). Training configs select this with `data.cache`.

What is cached is the loader's own state right after its resize step (data/transforms.py `Sample`),
not the finished targets:

    image.npy            (N, H, W, 3) uint8   RGB, resized as the loader resizes (area / bilinear)
    label_ids.npy        (N, H, W)    uint8   Cityscapes label ids, nearest neighbour
    instance_ids.npy     (N, H, W)    uint16  instanceIds, nearest neighbour
    disparity.npy        (N, H, W)    uint16  raw disparity PNG values, nearest neighbour
    centroid_ids.npy     (M,)         int64   instanceId of each evaluated instance, frame after frame
    centroid_xy.npy      (M, 2)       float64 its centroid (x, y) at H x W (computed at file resolution)
    centroid_offsets.npy (N + 1,)     int64   frame i's instances are rows offsets[i]:offsets[i + 1]
    disparity_scale.npy  (N,)         float64 W / W_file of each frame
    stats.npy            (N, 4, 2)    int64   size and mtime_ns of each frame's four source files
    index.json           format, size, split, frame names, source root, fingerprint

The rest of the pipeline (normalisation, jitter, crop, flip, building the vectors, masks and
disparity) then runs on these arrays exactly as on freshly decoded ones, so an item from the cache
equals the PNG path's bit for bit, flips included, by construction; and the cache holds 8 bytes
per pixel (finished targets would take 18: float32 vectors and disparity). Integer arrays and
float64 centroids round-trip exactly; nothing is stored in a lossy type.

A cache is refused with a one-line DataError when its frames or any source file's size or mtime
differ from the dataset's (stale), or when its files are missing or malformed (corrupt). A split is
written into a temporary directory beside its target and renamed into place, so readers see the old
complete cache, the new complete cache, or (for an instant while replacing) none.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from data.frames import DataError, Frame, find_frames, read_sample, resolve_root
from data.transforms import Augment, Sample, parse_size, resize

FORMAT = 1  # bump when the cached arrays or the loader steps before them change meaning
ARRAYS = ("image", "label_ids", "instance_ids", "disparity")
ROLES = ("image", "label_ids", "instance_ids", "disparity")  # Frame.files order, for stats.npy


class CacheError(DataError):
    """A cache is stale, corrupt, or cannot serve the requested dataset; the message says which."""


def split_dir(directory: str | os.PathLike, size: tuple[int, int], split: str) -> Path:
    """Where the cache of `split` at `size` lives under a cache directory."""
    return Path(directory) / f"{size[0]}x{size[1]}" / split


def default_dir(root: Path) -> Path:
    """The cache directory used when none is given: ROOT/cache."""
    return Path(root) / "cache"


def file_stats(frames: list[Frame]) -> np.ndarray:
    """(N, 4, 2) int64: size and mtime_ns of each frame's source files (missing: -1, -1)."""
    out = np.full((len(frames), len(ROLES), 2), -1, np.int64)
    for i, frame in enumerate(frames):
        files = frame.files
        for j, role in enumerate(ROLES):
            try:
                st = os.stat(files[role])
            except OSError:
                continue
            out[i, j] = st.st_size, st.st_mtime_ns
    return out


def fingerprint(size: tuple[int, int], names: list[str], stats: np.ndarray) -> str:
    """sha256 of the format, size, frame names and source file stats."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "size": list(size), "names": names}).encode())
    h.update(np.ascontiguousarray(stats, np.int64).tobytes())
    return h.hexdigest()


def _cached_state(frame: Frame, size: tuple[int, int]) -> Sample:
    """The loader's state after resizing: decode and validate, resize, BGR -> RGB."""
    sample = resize(read_sample(frame), size)
    sample.image = cv2.cvtColor(sample.image, cv2.COLOR_BGR2RGB)
    return sample


def _cached_state_job(job: tuple[Frame, tuple[int, int]]) -> Sample:
    return _cached_state(*job)


def write_split(root: Path, split: str, size: tuple[int, int], directory: Path, workers: int = 1,
                progress: bool = True) -> Path:
    """Decode every frame of `split` once and write its cache under `directory`; return its path."""
    frames = find_frames(root, split)
    target = split_dir(directory, size, split)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{split}.", suffix=".tmp", dir=target.parent))
    try:
        _write_arrays(frames, size, tmp, workers, progress, f"{split} {size[0]}x{size[1]}")
        stats = file_stats(frames)
        np.save(tmp / "stats.npy", stats)
        names = [f.name for f in frames]
        index = {"format": FORMAT, "split": split, "size": list(size), "frames": len(frames), "names": names,
                 "source_root": str(root.resolve()),
                 "fingerprint": fingerprint(size, names, stats), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                          time.gmtime())}
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a cache is shared like the dataset
        (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        for path in tmp.iterdir():  # durable before the rename makes them visible
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{split}.", suffix=".old", dir=target.parent))
            os.rename(target, old / split)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _write_arrays(frames: list[Frame], size: tuple[int, int], out: Path, workers: int, progress: bool,
                  label: str) -> None:
    """Fill the per-pixel arrays frame by frame (memory-mapped: the split never sits in memory)."""
    n, (h, w) = len(frames), size
    shapes = {"image": ((n, h, w, 3), np.uint8), "label_ids": ((n, h, w), np.uint8),
              "instance_ids": ((n, h, w), np.uint16), "disparity": ((n, h, w), np.uint16)}
    arrays = {k: np.lib.format.open_memmap(out / f"{k}.npy", mode="w+", dtype=dt, shape=shape)
              for k, (shape, dt) in shapes.items()}
    ids, xy, offsets, scales = [], [], [0], np.zeros(n, np.float64)
    jobs = [(f, size) for f in frames]
    if workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers)
        samples = pool.imap(_cached_state_job, jobs, chunksize=4)
    else:
        pool, samples = None, map(_cached_state_job, jobs)
    start = time.perf_counter()
    try:
        for i, sample in enumerate(samples):
            for key in ARRAYS:
                arrays[key][i] = getattr(sample, key)
            for k, (x, y) in sample.centroids.items():
                ids.append(k)
                xy.append((x, y))
            offsets.append(len(ids))
            scales[i] = sample.disparity_scale
            if progress and ((i + 1) % 100 == 0 or i + 1 == n):
                rate = (i + 1) / (time.perf_counter() - start)
                print(f"\r{label}: {i + 1}/{n} frames ({rate:.1f}/s)", end="", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.terminate()
    if progress:
        print(file=sys.stderr)
    for array in arrays.values():
        array.flush()
    del arrays
    np.save(out / "centroid_ids.npy", np.array(ids, np.int64))
    np.save(out / "centroid_xy.npy", np.array(xy, np.float64).reshape(-1, 2))
    np.save(out / "centroid_offsets.npy", np.array(offsets, np.int64))
    np.save(out / "disparity_scale.npy", scales)


class FrameCache:
    """A split's cache, checked against the dataset's frames; `sample(i)` is frame i's resized state.

    The arrays are memory-mapped lazily in each process (DataLoader workers included) and are not
    pickled with the dataset.
    """

    def __init__(self, directory: str | os.PathLike, frames: list[Frame], size: tuple[int, int]):
        self.directory = Path(directory)
        self.size = tuple(size)
        index = self._index()
        names = [f.name for f in frames]
        rebuild = f"rebuild it: python -m data.cache ROOT --size {size[0]}x{size[1]} --out DIR"
        if index.get("format") != FORMAT:
            raise CacheError(f"{self.directory}: cache format {index.get('format')} is not this loader's "
                             f"{FORMAT}; {rebuild}")
        if tuple(index.get("size", ())) != self.size:
            raise CacheError(f"{self.directory}: cache holds frames at {index.get('size')}, not {list(size)}")
        if index.get("names") != names:
            raise CacheError(f"{self.directory}: stale cache: it holds {index.get('frames')} frames, the dataset "
                             f"has {len(names)} (or different ones); {rebuild}")
        stats = file_stats(frames)
        if fingerprint(self.size, names, stats) != index.get("fingerprint"):
            raise CacheError(f"{self.directory}: stale cache: {self._changed(frames, stats)} changed since it was "
                             f"built; {rebuild}")
        self.n = len(frames)
        self._arrays: dict[str, np.ndarray] | None = None
        self._centroids = self._load_centroids()  # small: read once, pickled with the dataset
        self.arrays()  # check the per-pixel files now rather than at the first item

    def _index(self) -> dict:
        path = self.directory / "index.json"
        try:
            index = json.loads(path.read_text())
        except FileNotFoundError:
            raise CacheError(f"{path}: no cache index (an incomplete or foreign directory)") from None
        except (OSError, ValueError) as e:
            raise CacheError(f"{path}: corrupt cache index ({e})") from None
        if not isinstance(index, dict):
            raise CacheError(f"{path}: corrupt cache index (not a JSON object)")
        return index

    def _changed(self, frames: list[Frame], stats: np.ndarray) -> str:
        """The first source file whose size or mtime differs from the cache's record."""
        try:
            cached = self._load("stats", mmap=False)
        except CacheError:
            return "the source files"
        if cached.shape == stats.shape:
            for i, j in zip(*np.nonzero((cached != stats).any(axis=2))):
                return str(frames[i].files[ROLES[j]])
        return "the source files"

    def _load(self, name: str, mmap: bool = True) -> np.ndarray:
        path = self.directory / f"{name}.npy"
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise CacheError(f"{path}: cache file is missing; rebuild the cache") from None
        except (OSError, ValueError) as e:
            raise CacheError(f"{path}: corrupt cache file ({e}); rebuild the cache") from None

    def _expect(self, name: str, array: np.ndarray, shape: tuple, dtype) -> None:
        if array.shape != shape or array.dtype != dtype:
            raise CacheError(f"{self.directory / name}.npy: corrupt cache file: expected {np.dtype(dtype)} "
                             f"{shape}, got {array.dtype} {array.shape}; rebuild the cache")

    def _load_centroids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ids, xy = self._load("centroid_ids", False), self._load("centroid_xy", False)
        offsets, scales = self._load("centroid_offsets", False), self._load("disparity_scale", False)
        self._expect("centroid_offsets", offsets, (self.n + 1,), np.int64)
        self._expect("centroid_ids", ids, (int(offsets[-1]),), np.int64)
        self._expect("centroid_xy", xy, (int(offsets[-1]), 2), np.float64)
        self._expect("disparity_scale", scales, (self.n,), np.float64)
        return ids, xy, offsets, scales

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-pixel arrays, memory-mapped on first use in this process."""
        if self._arrays is None:
            h, w = self.size
            arrays = {k: self._load(k) for k in ARRAYS}
            self._expect("image", arrays["image"], (self.n, h, w, 3), np.uint8)
            self._expect("label_ids", arrays["label_ids"], (self.n, h, w), np.uint8)
            self._expect("instance_ids", arrays["instance_ids"], (self.n, h, w), np.uint16)
            self._expect("disparity", arrays["disparity"], (self.n, h, w), np.uint16)
            self._arrays = arrays
        return self._arrays

    def sample(self, i: int) -> Sample:
        """Frame i as the PNG path has it after resizing to the cache's size (RGB uint8 image)."""
        a = self.arrays()
        ids, xy, offsets, scales = self._centroids
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        centroids = {int(k): (float(x), float(y)) for k, (x, y) in zip(ids[lo:hi], xy[lo:hi])}
        return Sample(image=np.array(a["image"][i]), label_ids=np.array(a["label_ids"][i]),
                      instance_ids=np.array(a["instance_ids"][i]), disparity=np.array(a["disparity"][i]),
                      centroids=centroids, disparity_scale=float(scales[i]))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}  # workers map the files themselves


def open_cache(setting: str | os.PathLike | None, root: Path, split: str, size: tuple[int, int] | None,
               augment: Augment | None, frames: list[Frame]) -> FrameCache | None:
    """The cache the dataset should read, or None for the PNGs.

    `setting`: "off" (or None): never; "auto": ROOT/cache/<H>x<W>/<split> when it exists and can serve
    this dataset (a fixed size, no random scaling), else the PNGs; any other value: a cache directory
    that must exist and serve it. A cache that exists but is stale or corrupt is an error either way.
    """
    if setting is None or str(setting) == "off":
        return None
    auto = str(setting) == "auto"
    where = "data.cache" if auto else f"cache {setting}"
    if size is None or (augment is not None and augment.scale is not None):
        if auto:
            return None
        why = "size=None (file resolution)" if size is None else "random scaling (it resizes from file resolution)"
        raise CacheError(f"{where}: a cache holds frames resized to one size and cannot serve {why}; use "
                         f"cache=off")
    directory = split_dir(default_dir(root) if auto else setting, size, split)
    if not directory.exists():
        if auto:
            return None
        raise CacheError(f"{directory}: no cache of split {split!r} at {size[0]}x{size[1]}; build it with "
                         f"python -m data.cache {root} --size {size[0]}x{size[1]} --out {setting}")
    return FrameCache(directory, frames, size)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="dataset root (official Cityscapes layout)")
    p.add_argument("--size", type=parse_size, required=True, help="HxW the frames are resized to, e.g. 128x256")
    p.add_argument("--out", default=None, help="cache directory (default: ROOT/cache)")
    p.add_argument("--splits", nargs="+", default=None, help="splits to cache (default: every split found)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        root = resolve_root(args.root)
        splits = args.splits or sorted(d.name for d in (root / "leftImg8bit").glob("*") if d.is_dir())
        if not splits:
            raise DataError(f"{root / 'leftImg8bit'}: no split directories")
        directory = Path(args.out) if args.out else default_dir(root)
        for split in splits:
            start = time.perf_counter()
            target = write_split(root, split, args.size, directory, max(1, args.workers), not args.quiet)
            n = json.loads((target / "index.json").read_text())["frames"]
            mb = sum(f.stat().st_size for f in target.iterdir()) / 2**20
            print(f"{split}: {n} frames -> {target} ({mb:.1f} MiB, {time.perf_counter() - start:.1f} s)")
    except (DataError, OSError) as e:  # OSError: an --out that is a file or cannot be written
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
