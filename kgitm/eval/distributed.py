"""Exact evaluation when the split is spread over several processes (DDP).

Under a distributed strategy Lightning gives every rank its own share of an evaluation loader's
captions (a ``DistributedSampler``: caption ``j`` goes to rank ``j mod W``, and the last ranks repeat
a few captions so that all shares have the same length). The retrieval protocol, however, needs the
whole ``N x M`` matrix: a recall computed on one rank's share is wrong (rank 0 of 2 reports RSUM 11.7
for a perfect matrix). Here every rank

1. tells the others which images and captions it encoded (their indices);
2. keeps the images and captions it is the first holder of (so a repeated item is scored once) and
   finds the complete prefix of the split: images ``0 .. n-1`` with all ``k`` captions each (a
   ``limit_val_batches`` run stops inside the split);
3. receives every image it lacks, scores **all** ``n`` images against **its own** captions (its
   slice of the matrix's columns, block-wise as in :func:`kgitm.eval.similarity.compute_similarity`)
   and gathers the column slices once.

Every rank ends with the same matrix, equal to the one-process matrix (a pair's score does not depend
on the other pairs of its block), so every rank computes the same metrics and a ``ModelCheckpoint``
monitoring them sees the full-split value on every rank. The collective is passed in
(:class:`ProcessGroup` over ``torch.distributed``, or :class:`OneProcess`), which keeps the logic
testable against the one-process reference without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import numpy as np
import torch
from torch import Tensor

from kgitm.core.types import EncodedCaptions, EncodedImages, concat_images

__all__ = ["Collective", "EvalShare", "GatheredSplit", "OneProcess", "ProcessGroup", "current_collective", "gather_similarity"]


class Collective(Protocol):
    """The one collective operation evaluation needs: every rank's object, in rank order."""

    rank: int
    world_size: int

    def all_gather_object(self, obj: Any) -> list[Any]: ...


class OneProcess:
    """The collective of a single process (no copy: the object itself)."""

    rank = 0
    world_size = 1

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]


class ProcessGroup:
    """``torch.distributed``'s default process group (gloo on CPUs, NCCL on GPUs).

    Objects are pickled by ``torch.distributed.all_gather_object``; the encodings travel on the CPU
    (the split encoder keeps them there).
    """

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(out, obj)
        return out


def current_collective() -> Collective:
    """:class:`ProcessGroup` when ``torch.distributed`` runs more than one process, else :class:`OneProcess`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return ProcessGroup()
    return OneProcess()


@dataclass
class EvalShare:
    """What one process encoded in an evaluation pass (its share of the split, any order, repeats allowed).

    Shapes:
        image_index: ``(n,)`` long, the split index of each encoded image (distinct);
        images: ``n`` items, or ``None`` when the process saw no batch;
        caption_index: ``(m,)`` long; caption_image: ``(m,)`` long; captions: ``m`` items or ``None``.
    """

    image_index: Tensor
    images: Optional[EncodedImages]
    caption_index: Tensor
    caption_image: Tensor
    captions: Optional[EncodedCaptions]


@dataclass
class GatheredSplit:
    """The exact evaluation of a split, identical on every rank.

    Shapes:
        images: the ``n`` images of the complete prefix, in split order; sims: ``(n, n * k)`` float32;
        caption_image: ``(n * k,)`` long; incomplete: true when the pass stopped inside the split
        (the images after the complete prefix were left out).
    """

    images: EncodedImages
    sims: np.ndarray
    caption_image: Tensor
    incomplete: bool


def _first_holders(indices: list[Tensor], size: int) -> Tensor:
    """``(size,)``: the lowest rank holding each index, ``-1`` where no rank does."""
    holder = torch.full((size,), -1, dtype=torch.long)
    for rank in range(len(indices) - 1, -1, -1):  # lower ranks overwrite
        holder[indices[rank]] = rank
    return holder


def _take(items: Any, positions: Tensor) -> Any:
    """``items.index(positions)``, or ``items`` itself when that picks every item in order."""
    if len(positions) == len(items) and torch.equal(positions, torch.arange(len(items))):
        return items
    return items.index(positions)


def _complete_prefix(image_holder: Tensor, caption_holder: Tensor, k: int) -> int:
    """The number ``n`` of leading images that were encoded and whose ``k`` captions all were."""
    n_max = min(len(image_holder), len(caption_holder) // k)
    have = (image_holder[:n_max] >= 0) & (caption_holder[: n_max * k] >= 0).view(n_max, k).all(1)
    missing = (~have).nonzero()
    return int(missing[0]) if len(missing) else n_max


def gather_similarity(
    share: EvalShare,
    score: Callable[[EncodedImages, EncodedCaptions], Tensor],
    *,
    captions_per_image: int,
    collective: Optional[Collective] = None,
) -> GatheredSplit:
    """The full similarity matrix of a split encoded in shares across processes (see the module).

    Args:
        share: this process's encodings (:meth:`kgitm.models.matching.SplitEncoder.share`).
        score: all images x some captions -> ``(n, m)`` similarity (e.g. ``MatchingModel.similarity``
            with its memory budget).
        captions_per_image: ``k``; caption ``j`` belongs to image ``j // k`` in the split order.
        collective: the processes (default :func:`current_collective`).

    Raises:
        RuntimeError: no image was encoded by any process, or a caption's image does not match its
            index (the evaluation loader reordered the split).
    """
    comm = collective or current_collective()
    k = captions_per_image
    # 1. who holds what (small: indices only)
    held = comm.all_gather_object((share.image_index, share.caption_index))
    num_images = max((int(i.max()) + 1 for i, _ in held if len(i)), default=0)
    num_captions = max((int(c.max()) + 1 for _, c in held if len(c)), default=0)
    if num_images == 0 or num_captions == 0:
        raise RuntimeError("evaluation saw no images or no captions on any process; is the evaluation split empty?")
    image_holder = _first_holders([i for i, _ in held], num_images)
    caption_holder = _first_holders([c for _, c in held], num_captions)
    n = _complete_prefix(image_holder, caption_holder, k)
    incomplete = n * k != num_captions or n != num_images

    # 2. the images this process is the first holder of; every process receives them all
    def owned(index: Tensor, holder: Tensor, limit: int) -> Tensor:
        """Positions in this share of the items it is first to hold, inside the prefix, in index order;
        for a repeated item, its first position."""
        keep = (index < limit) & (holder[index.clamp_max(len(holder) - 1)] == comm.rank)
        positions = keep.nonzero().view(-1)
        order = torch.sort(index[positions], stable=True)
        first = torch.ones(len(positions), dtype=torch.bool)
        first[1:] = order.values[1:] != order.values[:-1]
        return positions[order.indices[first]]

    mine_img = owned(share.image_index, image_holder, n)
    if comm.world_size == 1:
        images = _take(share.images, mine_img)
    else:
        parts = comm.all_gather_object((share.image_index[mine_img], _take(share.images, mine_img) if len(mine_img) else None))
        index = torch.cat([i for i, _ in parts])
        images = concat_images([p for _, p in parts if p is not None]).index(torch.argsort(index))

    # 3. this process's columns: all images x its own captions; the column slices gathered once
    mine_cap = owned(share.caption_index, caption_holder, n * k)
    cap_index = share.caption_index[mine_cap]
    cap_image = share.caption_image[mine_cap]
    if not torch.equal(cap_image, cap_index // k):
        bad = int((cap_image != cap_index // k).nonzero()[0])
        raise RuntimeError(
            f"evaluation caption {int(cap_index[bad])} belongs to image {int(cap_image[bad])}, not {int(cap_index[bad]) // k}: "
            f"the split must list {k} captions per image in image order"
        )
    if len(mine_cap):
        captions = _take(share.captions, mine_cap)
        sims = score(images, captions).float().numpy()
    else:
        sims = np.zeros((n, 0), dtype=np.float32)
    if comm.world_size > 1:
        columns = comm.all_gather_object((cap_index, sims))
        full = np.empty((n, n * k), dtype=np.float32)
        for index, block in columns:
            full[:, index.numpy()] = block
        sims = full
    return GatheredSplit(images=images, sims=sims, caption_image=torch.arange(n * k) // k, incomplete=incomplete)

