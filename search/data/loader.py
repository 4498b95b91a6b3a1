"""DataLoaders with a reproducible order (per epoch, per rank)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class SeededSampler(Sampler[int]):
    """Shuffled (or sequential) indices, a pure function of (seed, epoch), split across ranks.

    Each iteration restarts from the same permutation until `set_epoch` changes it, so a
    BN-recalibration loader sees the same images every time (determinism), and a resumed
    run sees the same order as an uninterrupted one. With `world_size` > 1 it behaves like
    `DistributedSampler`: the permutation is padded to a multiple of the world size and
    rank r takes every world_size-th index from r.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.world_size > 1:
            if self.drop_last:
                order = order[: len(order) - len(order) % self.world_size]
            else:
                order += order[: (-len(order)) % self.world_size]
            order = order[self.rank::self.world_size]
        return order

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.size
        return self.size // self.world_size if self.drop_last else -(-self.size // self.world_size)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0, workers: int = 0,
                rank: int = 0, world_size: int = 1, drop_last: bool = False) -> DataLoader:
    """A DataLoader over `dataset` whose order depends only on (seed, sampler epoch, rank)."""
    sampler = SeededSampler(len(dataset), shuffle, seed, rank, world_size, drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def start_epoch(loader, epoch: int) -> None:
    """Tell the loader's sampler (its seeded order) and data set (per-sample augmentation, NYU depth)
    which epoch begins; either may lack `set_epoch` (a plain sampler, an in-memory data set), and
    `loader` may be any iterable of batches."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    dataset = getattr(loader, "dataset", None)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
