"""The loaders a training reads: the dataset root it trains on, the training batches from any step on, and
each process's shard of an evaluation split.

`cfg` is the training config (engine/config.py's Config), read by attribute only (no call back into it):
data/ imports nothing from engine/. A request the data cannot meet (more frames than a split holds, fewer
frames than one batch) is a DataError naming the setting to change.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from data.cityscapes import CityscapesMultiTask, DataError, resolve_root
from data.npy import NpyTwoTask
from data.resident import ResidentLoader, ResidentSplit
from data.sampler import ResumableSampler, SeededItems
from data.synthetic.profile import profile_problem
from data.transforms import Augment


def training_root(root: str, synthetic_profile: str | None = None) -> Path:
    """The absolute dataset root `root` (the config's `data_root`), checked to be a directory holding the
    synthetic profile `synthetic_profile`, if one is given."""
    root = resolve_root(root).resolve()
    if synthetic_profile is not None and (problem := profile_problem(root, synthetic_profile)):
        raise DataError(problem)
    return root


def make_loaders(cfg, root: Path, rank: int, world: int, start_step: int, pin: bool,
                 device: torch.device | None = None) -> tuple[DataLoader | ResidentLoader, DataLoader, int]:
    """(training loader from `start_step` on, this process's shard of the val split, steps per epoch). With
    `data.resident` the training batches come from the split kept on `device` (data/resident.py)."""
    d = cfg.data
    augment = Augment(flip=d.flip, scale=d.scale, crop=d.crop, jitter=d.jitter)
    if d.format == "npy":  # the 2-task protocols' preprocessed layout (data/npy.py)
        train_set = NpyTwoTask(root, d.train_split, d.size, augment=d.flip, limit=d.train_frames)
        val_set = NpyTwoTask(root, d.val_split, d.size, augment=False, limit=d.val_frames)
    else:
        train_set = CityscapesMultiTask(root, d.train_split, size=d.size, augment=augment, limit=d.train_frames,
                                        cache=d.cache)
        val_set = CityscapesMultiTask(root, d.val_split, size=d.size, augment=False, limit=d.val_frames,
                                      cache=d.cache)
    for key, split, data in (("train_frames", d.train_split, train_set), ("val_frames", d.val_split, val_set)):
        asked = getattr(d, key)
        if asked is not None and len(data) < asked:  # the config (and the identity) would claim more frames
            raise DataError(f"data.{key}={asked} but split {split!r} of {root} has only {len(data)} frames; "
                            f"set data.{key}={len(data)} or null (all frames)")
    per_rank_batch = cfg.optim.batch_size // world
    try:
        sampler = ResumableSampler(len(train_set), per_rank_batch, cfg.seed, rank, world, start_step=start_step)
    except ValueError as e:  # fewer frames than one batch
        raise DataError(f"split {d.train_split!r} of {root}: {e} (optim.batch_size={cfg.optim.batch_size}, "
                        f"data.train_frames={d.train_frames})") from e
    if d.resident:
        built = time.perf_counter()
        resident = ResidentSplit(train_set, device or torch.device("cpu"))
        if rank == 0:
            print(f"resident training split: {len(train_set)} frames, {resident.nbytes / 2**30:.2f} GiB on "
                  f"{resident.device}, built in {time.perf_counter() - built:.1f} s", flush=True)
        loader = ResidentLoader(resident, per_rank_batch, cfg.seed, rank, world, start_step)
    else:
        loader = DataLoader(SeededItems(train_set, cfg.seed), batch_size=per_rank_batch, sampler=sampler,
                            num_workers=d.num_workers, pin_memory=pin, drop_last=True, persistent_workers=False)
    return loader, eval_loader(cfg, root, d.val_split, rank, world, val_set), sampler.steps_per_epoch


def eval_loader(cfg, root: Path, split: str, rank: int, world: int,
                dataset: CityscapesMultiTask | None = None) -> DataLoader:
    """This process's shard of an evaluation split (val for selection, data.test_split for the scores)."""
    d = cfg.data
    dataset = dataset or CityscapesMultiTask(root, split, size=d.size, augment=False, limit=d.val_frames,
                                             cache=d.cache)
    return DataLoader(Subset(dataset, range(rank, len(dataset), world)), batch_size=cfg.eval_batch_size,
                      num_workers=d.num_workers)
