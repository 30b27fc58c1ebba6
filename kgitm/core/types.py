"""What the encoders hand to the matchers: encoded images and captions, and their helpers.

Encoders turn a :class:`~kgitm.core.batch.Batch` into :class:`EncodedImages` / :class:`EncodedCaptions`
(local features with masks, plus structure); a matcher scores every image of one block against every
caption of another block. The helpers here join blocks (:func:`concat_images`, :func:`concat_captions`),
cut padding (:func:`trim`) and rotate an image's boxes (:func:`rotated_images`); every container can be
indexed and moved as a whole (:func:`index_tree`, :func:`to_device`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, TypeVar

import torch
from torch import Tensor, nn

from kgitm.core.geometry import rotate_boxes

T = TypeVar("T")

__all__ = [
    "EncodedCaptions",
    "EncodedImages",
    "WordPieces",
    "concat_captions",
    "concat_images",
    "index_tree",
    "rotated_images",
    "stack_padded",
    "to_device",
    "trim",
]


def index_tree(value: T, idx: slice | Tensor) -> T:
    """Rows ``idx`` of every tensor in ``value`` (a tensor, a dataclass, a dict or a list of them).

    Tensors are indexed along their first axis; lists are items per row (``words``: one token list per
    caption) and are picked the same way; other values are kept.
    """
    if isinstance(value, Tensor):
        return value[idx]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: index_tree(getattr(value, f.name), idx) for f in dataclasses.fields(value)})
    if isinstance(value, dict):
        return {k: index_tree(v, idx) for k, v in value.items()}
    if isinstance(value, list):
        if isinstance(idx, slice):
            return value[idx]
        return [value[i] for i in idx.reshape(-1).tolist()]
    return value


def to_device(value: T, device: torch.device | str, *, non_blocking: bool = False) -> T:
    """``value`` with every tensor moved to ``device`` (same containers as :func:`index_tree`)."""
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=non_blocking)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value, **{f.name: to_device(getattr(value, f.name), device, non_blocking=non_blocking) for f in dataclasses.fields(value)}
        )
    if isinstance(value, dict):
        return {k: to_device(v, device, non_blocking=non_blocking) for k, v in value.items()}
    return value


@dataclass
class EncodedImages:
    """Encoded regions of a block of images.

    Shapes:
        features: ``(N, R, D)``; mask: ``(N, R)`` bool, true for real regions (padding is false and
        must never be attended); boxes: ``(N, R, 4)`` corners normalised to ``[0, 1]`` by the image
        size, or ``None``; extra: optional matcher-specific structure (SGM's scene-graph index
        tensors, cached per-block precomputations), each a tensor with the block on its first axis.
    """

    features: Tensor
    mask: Tensor
    boxes: Optional[Tensor] = None
    extra: Optional[dict] = None

    def __len__(self) -> int:
        return self.features.shape[0]

    def index(self, idx: slice | Tensor) -> "EncodedImages":
        return index_tree(self, idx)

    def to(self, device: torch.device | str) -> "EncodedImages":
        return to_device(self, device)


@dataclass
class EncodedCaptions:
    """Encoded words of a block of captions.

    Shapes:
        features: ``(M, L, D)``; mask: ``(M, L)`` bool, true for real words; adjacency: ``(M, L, L)``
        bool dependency edges between word positions (symmetric, no self loops), or ``None``;
        extra: optional matcher-specific structure (SGM, concept labels), block on the first axis.
    """

    features: Tensor
    mask: Tensor
    adjacency: Optional[Tensor] = None
    extra: Optional[dict] = None

    def __len__(self) -> int:
        return self.features.shape[0]

    def index(self, idx: slice | Tensor) -> "EncodedCaptions":
        return index_tree(self, idx)

    def to(self, device: torch.device | str) -> "EncodedCaptions":
        return to_device(self, device)


class WordPieces(NamedTuple):
    """Where a list of words (e.g. concept names) sits in a text encoder's input embedding table.

    Shapes:
        ids: ``(P,)`` rows of the table, the known pieces of all words.
        owner: ``(P,)`` the word each piece belongs to.
        known: ``(W,)`` bool, the word has at least one known piece.
    """

    ids: Tensor
    owner: Tensor
    known: Tensor

    @classmethod
    def from_lists(cls, per_word: list[list[int]]) -> "WordPieces":
        """From each word's list of table rows (empty for a word with no known piece)."""
        return cls(
            torch.tensor([i for p in per_word for i in p], dtype=torch.long),
            torch.tensor([w for w, p in enumerate(per_word) for _ in p], dtype=torch.long),
            torch.tensor([bool(p) for p in per_word], dtype=torch.bool),
        )


def pad_to(t: Tensor, dims: tuple[int, ...], size: int) -> Tensor:
    """``t`` zero-padded at the end of each axis in ``dims`` to length ``size``."""
    pad: list[int] = []
    for d in range(t.dim() - 1, -1, -1):
        pad += [0, size - t.shape[d]] if d in dims else [0, 0]
    return nn.functional.pad(t, pad)


def stack_padded(items: list[Tensor], width: int, value: float | int = 0) -> Tensor:
    """Stack tensors of different lengths along a new first axis, each padded (or cut) to ``width``
    along its first axis with ``value``.

    Shapes:
        items: ``B`` tensors ``(n_b, ...)`` with equal trailing shapes. Output: ``(B, width, ...)``.
    """
    if not items:
        raise ValueError("stack_padded needs at least one tensor")
    first = items[0]
    out = torch.full((len(items), width, *first.shape[1:]), value, dtype=first.dtype)
    for b, t in enumerate(items):
        n = min(len(t), width)
        out[b, :n] = t[:n]
    return out


def _concat_extra(parts: list[Optional[dict]]) -> Optional[dict]:
    """Concatenate ``extra`` dicts along the block axis, padding every other axis to the widest part."""
    if not parts[0]:
        return None
    out = {}
    for k in parts[0]:
        ts = [p[k] for p in parts]
        dims = tuple(range(1, ts[0].dim()))
        widths = [max(t.shape[d] for t in ts) for d in dims]
        padded = []
        for t in ts:
            for d, w in zip(dims, widths):
                t = pad_to(t, (d,), w)
            padded.append(t)
        out[k] = torch.cat(padded)
    return out


def concat_images(parts: list[EncodedImages]) -> EncodedImages:
    """Concatenate encoded image blocks (same region count) along the batch."""
    return EncodedImages(
        features=torch.cat([p.features for p in parts]),
        mask=torch.cat([p.mask for p in parts]),
        boxes=None if parts[0].boxes is None else torch.cat([p.boxes for p in parts]),
        extra=_concat_extra([p.extra for p in parts]),
    )


def concat_captions(parts: list[EncodedCaptions]) -> EncodedCaptions:
    """Concatenate encoded caption blocks, padding the word axis to the longest block."""
    width = max(p.features.shape[1] for p in parts)
    adjacency = None
    if parts[0].adjacency is not None:
        adjacency = torch.cat([pad_to(p.adjacency, (1, 2), width) for p in parts])
    return EncodedCaptions(
        features=torch.cat([pad_to(p.features, (1,), width) for p in parts]),
        mask=torch.cat([pad_to(p.mask, (1,), width) for p in parts]),
        adjacency=adjacency,
        extra=_concat_extra([p.extra for p in parts]),
    )


def trim(items: EncodedImages | EncodedCaptions, width: int) -> EncodedImages | EncodedCaptions:
    """``items`` cut to the first ``width`` positions (features, mask, boxes, adjacency); unchanged
    when ``width`` is the full width or the items carry matcher-specific ``extra`` structure (whose
    indices point at positions and are not cut)."""
    if width >= items.mask.shape[1] or items.extra:
        return items
    if isinstance(items, EncodedImages):
        boxes = None if items.boxes is None else items.boxes[:, :width]
        return EncodedImages(items.features[:, :width], items.mask[:, :width], boxes, items.extra)
    adjacency = None if items.adjacency is None else items.adjacency[:, :width, :width]
    return EncodedCaptions(items.features[:, :width], items.mask[:, :width], adjacency, items.extra)


def rotated_images(images: EncodedImages) -> EncodedImages:
    """The same images with their boxes rotated by 180 degrees (:func:`~kgitm.core.geometry.rotate_boxes`):
    features, masks and ``extra`` unchanged, every pairwise direction reversed."""
    if images.boxes is None:
        raise ValueError("rotated images need image boxes (data.require_boxes true and a box-aware image encoder)")
    return EncodedImages(images.features, images.mask, rotate_boxes(images.boxes), images.extra)


def first_device(*values: Any) -> Optional[torch.device]:
    """The device of the first tensor found in ``values`` (``None`` when there is none)."""
    for v in values:
        if isinstance(v, Tensor):
            return v.device
    return None
