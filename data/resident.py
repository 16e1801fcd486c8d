"""The training split resident on the training device (`data.resident: true`).

The finished items of every training frame (the Tiny cache's frames, or the PNGs' where no cache was
built, through `CityscapesMultiTask.fixed_item`: the loader's own code) are built once and kept on the
device; batches are then gathered there, in the order of train.py's loader: the same ResumableSampler
(per-epoch permutation, DDP shard, start in the middle of an epoch on resume), and for each item the
flip drawn from the same seed (data/sampler.py `item_seed`, data/cityscapes.py `item_rng`) as
`SeededItems` draws it. No loader workers, no host-to-device copies of images and targets: per batch
only the indices and flip flags (a few bytes) go to the device.

Flips run on the device per sample: image, semantic labels, masks, depth and the y component of the
instance vectors are mirrored (a permutation: the CPU path's flipped values exactly). The x component
is not computed by negation: the CPU path rebuilds it from the mirrored centroid, float32(W - 1 - cx)
- (W - 1 - x), which differs from -(float32(cx) - x) in the last bit (14 % of the x components of 20
synthetic frames at 128x256, at most 7.6e-6 px), so the CPU path's flipped x
component is built once per frame beside the rest (4 bytes per pixel more) and selected. A batch
therefore equals the DataLoader's bit for bit, flips included (tests/test_speed_switches.py).

Memory: 31 bytes per pixel per frame (float32 image, vectors, flipped x, depth; uint8 labels; two
masks): 2.8 GiB for the 2975 Cityscapes training frames at 128x256, 11.3 GiB at 256x512.
"""

from __future__ import annotations

import torch

from data.cityscapes import CityscapesMultiTask, item_rng
from data.sampler import ResumableSampler, item_seed
from data.transforms import sample_geometry

STORED = ("image", "semantic", "instance", "instance_mask", "depth", "depth_mask")


class ResidentSplit:
    """Every frame's finished, unflipped item on `device` (and the flipped instance x component)."""

    def __init__(self, dataset: CityscapesMultiTask, device: torch.device):
        if dataset.size is None or (dataset.augment is not None and (dataset.augment.crop or dataset.augment.scale
                                                                     or dataset.augment.jitter)):
            raise ValueError("a resident split needs a fixed size and no crop, scale or jitter")
        self.dataset, self.device = dataset, device
        self.flips = dataset.augment is not None and dataset.augment.flip
        n = len(dataset)
        first = dataset.fixed_item(0)
        dtypes = {k: torch.uint8 if k == "semantic" else v.dtype for k, v in first.items()}  # trainIds < 256
        self.arrays = {k: torch.empty((n, *first[k].shape), dtype=dtypes[k], device=device) for k in STORED}
        self.flipped_x = torch.empty((n if self.flips else 0, *first["instance"].shape[1:]), dtype=torch.float32,
                                     device=device)
        for i in range(n):
            items = dataset.fixed_items(i, mirrored=self.flips)  # one read of the frame for both
            for k in STORED:
                self.arrays[k][i] = items[0][k].to(dtypes[k])
            if self.flips:  # the CPU path's x component of the mirrored item, in mirrored orientation
                self.flipped_x[i] = items[1]["instance"][0]

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() for a in [*self.arrays.values(), self.flipped_x])

    def flip_of(self, seed: int, epoch: int, index: int) -> bool:
        """Whether the loader mirrors item `index` in `epoch` (the draw SeededItems makes for that key)."""
        if not self.flips:
            return False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(seed, epoch, index))
            return sample_geometry(item_rng(), self.dataset.augment, self.dataset.size).flip

    def batch(self, indices: list[int], flips: list[bool]) -> dict[str, torch.Tensor]:
        """The items `indices`, each mirrored where `flips` says, as one batch on the device."""
        idx = torch.tensor(indices, dtype=torch.long).to(self.device, non_blocking=True)
        out = {k: a.index_select(0, idx) for k, a in self.arrays.items()}
        out["semantic"] = out["semantic"].long()
        if any(flips):
            f = torch.tensor(flips, dtype=torch.bool).to(self.device, non_blocking=True)
            for k, v in out.items():
                mirrored = v.flip(-1)
                if k == "instance":
                    mirrored = torch.cat([self.flipped_x.index_select(0, idx)[:, None], mirrored[:, 1:]], 1)
                out[k] = torch.where(f.view(-1, *[1] * (v.ndim - 1)), mirrored, v)
        return out


class ResidentLoader:
    """Batches of a ResidentSplit in train.py's loader order: iterating gives batches forever from `start_step`."""

    def __init__(self, split: ResidentSplit, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 start_step: int = 0):
        self.split, self.batch_size, self.seed = split, batch_size, seed
        self.sampler = ResumableSampler(len(split.dataset), batch_size, seed, rank, world, start_step=start_step)
        self.steps_per_epoch = self.sampler.steps_per_epoch

    def __iter__(self):
        keys = iter(self.sampler)
        while True:
            batch = [next(keys) for _ in range(self.batch_size)]
            yield self.split.batch([i for _, i in batch], [self.split.flip_of(self.seed, e, i) for e, i in batch])
