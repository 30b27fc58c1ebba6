"""A training sampler that can stop inside an epoch and continue exactly where it stopped.

:class:`ResumableSampler` remembers the seed of the epoch order it is drawing; a checkpoint written
inside an epoch stores that seed and the batches already trained on
(:class:`kgitm.lit.callbacks.ExactResume`), and on resume the sampler continues the same order after
them. (Lightning's own loader state is taken when the loader has handed out one batch more than was
trained on, because it fetches a batch ahead, so the callback uses the loop's progress instead.)

In one process the order is exactly ``torch.utils.data.RandomSampler``'s (a seed drawn from the global
torch generator when an epoch starts, then ``randperm``), so runs are the same as with a plain
shuffled loader (the global generators are saved and restored by the same callback). Under DDP every
rank must draw the same order: the seed is then ``seed + epoch`` as in ``DistributedSampler``, and
each rank takes every ``world``-th sample of the padded order. The sampler is a
``DistributedSampler``, so Lightning leaves it in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import torch
import torch.distributed as dist
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

__all__ = ["ResumableSampler"]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ResumableSampler(DistributedSampler):
    """Shuffled (or ordered) sample indices that can resume mid-epoch (see the module).

    Args:
        dataset: the dataset (only its length is read).
        shuffle: a new random order each epoch (default ``True``).
        seed: the base seed of the multi-process order (``seed + epoch``).
        drop_last: under DDP, drop the tail instead of padding it (as ``DistributedSampler``).
    """

    def __init__(self, dataset: Dataset, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        world, rank = _world()
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.epoch_seed: Optional[int] = None
        self._skip = 0
        self._resume_seed: Optional[int] = None

    def resume(self, epoch_seed: Optional[int], skip: int) -> None:
        """The next ``__iter__`` continues the order drawn with ``epoch_seed``, skipping ``skip`` samples."""
        self._resume_seed, self._skip = epoch_seed, skip

    def _order(self) -> list[int]:
        n = len(self.dataset)
        if not self.shuffle:
            return list(range(n))
        if self._resume_seed is not None:
            seed = self._resume_seed
        elif self.num_replicas == 1:  # RandomSampler's draw
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
        else:
            seed = self.seed + self.epoch
        self.epoch_seed = seed
        g = torch.Generator()
        g.manual_seed(seed)
        return torch.randperm(n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        self._resume_seed = None
        if self.num_replicas > 1:
            if self.drop_last:
                order = order[: self.total_size]
            else:
                order += (order * (self.total_size // max(1, len(order)) + 1))[: self.total_size - len(order)]
            order = order[self.rank : self.total_size : self.num_replicas]
        skip, self._skip = self._skip, 0
        return iter(order[skip:])

    def __len__(self) -> int:
        return len(self.dataset) if self.num_replicas == 1 else self.num_samples
