"""Exact full similarity matrices for cross-attention matchers, computed block by block.

A cross-attention matcher needs its own attention for every image-caption pair (Flickr30K test is
5 million pairs, COCO 5K 125 million). The public code loops over captions in Python; here the
``N_img x N_cap`` matrix is tiled into blocks as large as a memory budget allows and each block is
scored by one batched :class:`~kgitm.matchers.base.Matcher` call. Scores of a pair never depend on the
other items of its block, so the tiled matrix equals a whole-matrix call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from kgitm.matchers.base import EncodedCaptions, EncodedImages, Matcher


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
    ``image_block * caption_block * pair_bytes <= budget`` (at least one pair per block) with as few
    blocks as possible, then as square as possible.

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
    best: tuple[int, int] | None = None  # (number of blocks, -shorter side): fewest, then squarest
    sizes = (1, 1)
    for parts in range(1, m + 1):  # split the captions into `parts` equal blocks
        cb = math.ceil(m / parts)
        ib = min(n, max_pairs // cb)
        if ib == 0:
            continue
        key = (parts * math.ceil(n / ib), -min(ib, cb))
        if best is None or key < best:
            best, sizes = key, (ib, cb)
    return sizes


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
    progress: bool = False,
) -> Tensor:
    """The full ``(N_img, N_cap)`` similarity matrix, block by block, without gradients.

    Blocks are sized from ``matcher.pair_memory_bytes`` so that one block's activations stay within
    ``memory_budget_mb`` (:func:`plan_blocks`). Each block runs on the device of the matcher's
    parameters (or, for a matcher without any, of ``images.features``);
    :meth:`Matcher.prepare_images` runs once per image block and :meth:`Matcher.prepare_captions`
    once per caption block visit. The matcher's train/eval mode is left as it is.

    Args:
        matcher: the model scoring one block of images against one block of captions.
        images: all encoded images (any device; moved block by block).
        captions: all encoded captions (any device; moved block by block).
        memory_budget_mb: activation budget of one block in MiB (default ``1024``).
        image_block: fixed number of images per block (default: from the budget).
        caption_block: fixed number of captions per block (default: from the budget).
        progress: show a progress bar over blocks (default ``False``).

    Shapes:
        Output: ``(N_img, N_cap)`` float32 on the CPU.
    """
    n, m = len(images), len(captions)
    out = torch.empty(n, m, dtype=torch.float32)
    if n == 0 or m == 0:
        return out
    ib, cb = plan_blocks(
        matcher.pair_memory_bytes(images, captions),
        n,
        m,
        memory_budget_mb=memory_budget_mb,
        image_block=image_block,
        caption_block=caption_block,
    )
    device = _device_of(matcher, images)
    total = math.ceil(n / ib) * math.ceil(m / cb)
    with torch.inference_mode(), tqdm(total=total, disable=not progress, desc="similarity", unit="block") as bar:
        for i in range(0, n, ib):
            image_block_ = matcher.prepare_images(images.index(slice(i, i + ib)).to(device))
            for j in range(0, m, cb):
                caption_block_ = matcher.prepare_captions(captions.index(slice(j, j + cb)).to(device))
                out[i : i + ib, j : j + cb] = matcher(image_block_, caption_block_).float().cpu()
                bar.update(1)
    return out
