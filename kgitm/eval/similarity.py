"""Exact full similarity matrices for cross-attention matchers, computed block by block.

A cross-attention matcher needs its own attention for every image-caption pair (Flickr30K test is
5 million pairs, COCO 5K 125 million). The public code loops over captions in Python; here the
``N_img x N_cap`` matrix is tiled into blocks as large as a memory budget allows and each block is
scored by one batched :class:`~kgitm.matchers.base.Matcher` call. Scores of a pair never depend on the
other items of its block, so the tiled matrix equals a whole-matrix call.

Two things make the blocks fast without changing a single score:

* **Padding is trimmed.** Captions are visited longest first and each caption block is cut to the
  longest caption in it (images likewise by their number of valid regions), so a block of 8-word
  captions padded to 16 does half the work. Padded positions are masked anyway, so the scores are
  the same; items carrying matcher-specific structure (``extra``) are never trimmed.
* **Blocks fit the cache on the CPU.** A block's activations are read and written several times
  (softmax, norms, pooling); on the CPU a block that fits the last-level cache is several times
  faster per pair than one that streams through RAM. On the CPU blocks are therefore capped at
  ``cpu_block_mb`` (default: the size of the last-level cache, read from sysfs), and never exceed
  ``memory_budget_mb`` on any device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from kgitm.core.cpu import last_level_cache_mb
from kgitm.core.types import EncodedCaptions, EncodedImages, trim
from kgitm.matchers.base import Matcher


#: relative excess over the fewest blocks that :func:`plan_blocks` accepts for a squarer block.
BLOCK_COUNT_SLACK = 0.1


def plan_blocks(
    pair_bytes: int,
    num_images: int,
    num_captions: int,
    *,
    memory_budget_mb: float = 1024,
    image_block: int | None = None,
    caption_block: int | None = None,
) -> tuple[int, int]:
    """Block sizes ``(image_block, caption_block)`` whose pairs fit ``memory_budget_mb``.

    Sizes given explicitly are kept; otherwise they are chosen so that
    ``image_block * caption_block * pair_bytes <= budget`` (at least one pair per block): the squarest
    shape among those within :data:`BLOCK_COUNT_SLACK` (10%) of the fewest blocks.

    Args:
        pair_bytes: activation memory of one pair (:meth:`Matcher.pair_memory_bytes`).
        num_images: number of images of the full matrix.
        num_captions: number of captions of the full matrix.
        memory_budget_mb: activation budget of one block, in MiB.
        image_block: fixed number of images per block, or ``None``.
        caption_block: fixed number of captions per block, or ``None``.
    """
    if memory_budget_mb <= 0:
        raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb}")
    max_pairs = max(1, int(memory_budget_mb * 2**20) // max(1, int(pair_bytes)))
    n, m = max(1, num_images), max(1, num_captions)
    if image_block is not None and caption_block is not None:
        return max(1, min(image_block, n)), max(1, min(caption_block, m))
    if image_block is not None:
        ib = max(1, min(image_block, n))
        return ib, max(1, min(m, max_pairs // ib))
    if caption_block is not None:
        cb = max(1, min(caption_block, m))
        return max(1, min(n, max_pairs // cb)), cb
    shapes = []  # (number of blocks, image block, caption block) for each way to split the captions
    for parts in range(1, m + 1):  # split the captions into `parts` equal blocks
        cb = math.ceil(m / parts)
        ib = min(n, max_pairs // cb)
        if ib > 0:
            shapes.append((parts * math.ceil(n / ib), ib, cb))
    fewest = min(blocks for blocks, _, _ in shapes)
    # among the shapes within BLOCK_COUNT_SLACK of the fewest blocks, the squarest (a 1 x 200 block
    # multiplies skinny matrices), then the fewest blocks
    near = [(-min(ib, cb), blocks, ib, cb) for blocks, ib, cb in shapes if blocks <= fewest * (1 + BLOCK_COUNT_SLACK)]
    _, _, ib, cb = min(near)
    return ib, cb


def _lengths(mask: Tensor) -> Tensor:
    """Valid positions of each item: one past the last true entry of each mask row (at least 1)."""
    width = mask.shape[1]
    positions = torch.arange(1, width + 1, device=mask.device)
    return (mask.long() * positions).amax(1).clamp_min(1)


def _device_of(matcher: Matcher, images: EncodedImages) -> torch.device:
    for tensor in matcher.parameters():
        return tensor.device
    for tensor in matcher.buffers():
        return tensor.device
    return images.features.device


def compute_similarity(
    matcher: Matcher,
    images: EncodedImages,
    captions: EncodedCaptions,
    *,
    memory_budget_mb: float = 1024,
    image_block: int | None = None,
    caption_block: int | None = None,
    cpu_block_mb: float | None = None,
    trim_padding: bool = True,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """The full ``(N_img, N_cap)`` similarity matrix, block by block, without gradients.

    Blocks are sized from ``matcher.pair_memory_bytes`` so that one block's activations stay within
    ``memory_budget_mb`` (:func:`plan_blocks`), and on the CPU within ``cpu_block_mb`` as well.
    Captions (and images) are visited in order of decreasing length with each block trimmed to its
    longest item; the columns (rows) are put back in the input order. Each block runs on ``device`` (default: the device of
    the matcher's parameters, or for a matcher without any, of ``images.features``);
    :meth:`Matcher.prepare_images` runs once per image block and :meth:`Matcher.prepare_captions`
    once per caption block visit. The matcher's train/eval mode is left as it is.

    Args:
        matcher: the model scoring one block of images against one block of captions.
        images: all encoded images (any device; moved block by block).
        captions: all encoded captions (any device; moved block by block).
        memory_budget_mb: activation budget of one block in MiB (default ``1024``).
        image_block: fixed number of images per block (default: from the budget).
        caption_block: fixed number of captions per block (default: from the budget).
        cpu_block_mb: on the CPU, the largest block in MiB (default ``None``: the last-level cache,
            :func:`last_level_cache_mb`); ignored on other devices.
        trim_padding: visit items by length and trim each block's padding (default ``True``; the
            scores are the same either way).
        progress: show a progress bar over blocks (default ``False``).
        device: where the blocks run (default ``None``: the device of the matcher's parameters, or
            for a matcher without any, such as SCAN, of ``images.features``).

    Shapes:
        Output: ``(N_img, N_cap)`` float32 on the CPU.
    """
    n, m = len(images), len(captions)
    out = torch.empty(n, m, dtype=torch.float32)
    if n == 0 or m == 0:
        return out
    device = _device_of(matcher, images) if device is None else torch.device(device)
    budget = memory_budget_mb
    if device.type == "cpu":
        budget = min(budget, last_level_cache_mb() if cpu_block_mb is None else cpu_block_mb)
    ib, cb = plan_blocks(
        matcher.pair_memory_bytes(images, captions),
        n,
        m,
        memory_budget_mb=budget,
        image_block=image_block,
        caption_block=caption_block,
    )
    image_len, caption_len = _lengths(images.mask), _lengths(captions.mask)
    if trim_padding:  # longest first, ties in input order
        image_order = torch.sort(image_len, descending=True, stable=True).indices
        caption_order = torch.sort(caption_len, descending=True, stable=True).indices
    else:
        image_order, caption_order = torch.arange(n), torch.arange(m)
    total = math.ceil(n / ib) * math.ceil(m / cb)
    with torch.inference_mode(), tqdm(total=total, disable=not progress, desc="similarity", unit="block") as bar:
        for i in range(0, n, ib):
            rows = image_order[i : i + ib]
            block = images.index(rows.to(images.mask.device))
            block = trim(block, int(image_len[rows].max())) if trim_padding else block
            image_block_ = matcher.prepare_images(block.to(device))
            for j in range(0, m, cb):
                cols = caption_order[j : j + cb]
                block = captions.index(cols.to(captions.mask.device))
                block = trim(block, int(caption_len[cols].max())) if trim_padding else block
                caption_block_ = matcher.prepare_captions(block.to(device))
                scores = matcher(image_block_, caption_block_).float().cpu()
                out[rows[:, None], cols[None, :]] = scores
                bar.update(1)
    return out
