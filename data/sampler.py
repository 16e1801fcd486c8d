"""Resumable, DDP-aware training order with augmentation seeded per (epoch, index).

torch's DistributedSampler gives each process its shard of a per-epoch permutation but cannot
start in the middle of an epoch, and DataLoader workers draw augmentation randomness from
worker-local RNGs whose state depends on the worker count and on when the iterator was made.
Here the sampler runs over epochs without end, starting at any step, and each item's
augmentation is seeded from (seed, epoch, index): a run resumed after a crash sees exactly the
batches of an uninterrupted run, with any number of workers.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


class ResumableSampler(Sampler):
    """Yields (epoch, index) keys forever, starting at global step `start_step`.

    Each epoch is DistributedSampler's permutation (seed + epoch, drop_last) for this rank, cut
    to a whole number of per-process batches.
    """

    def __init__(self, dataset_len: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 start_step: int = 0):
        self.shard = DistributedSampler(range(dataset_len), num_replicas=world, rank=rank, shuffle=True,
                                        seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.steps_per_epoch = self.shard.num_samples // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{dataset_len} training frames are fewer than one batch of {batch_size} "
                             f"per process x {world} processes")
        self.start_step = start_step

    def __iter__(self):
        epoch, skip = divmod(self.start_step, self.steps_per_epoch)
        while True:
            self.shard.set_epoch(epoch)
            order = list(self.shard)[: self.steps_per_epoch * self.batch_size]
            for index in order[skip * self.batch_size:]:
                yield epoch, index
            epoch, skip = epoch + 1, 0


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The torch seed under which item `index` of `epoch` draws its augmentation."""
    return ((seed * 1_000_003 + epoch) * 1_000_003 + index) % 2**63


class SeededItems(Dataset):
    """Wraps a dataset indexed by (epoch, index) keys: torch's RNG is seeded per item while the
    item is built, then restored, so augmentation depends only on (seed, epoch, index)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, epoch, index))
            return self.dataset[index]
