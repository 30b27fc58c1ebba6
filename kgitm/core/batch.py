"""The typed batch: what the data pipeline gives a model.

A :class:`Batch` pairs ``B`` captions with their images. Everything a model reads is a tensor computed
by the data pipeline (:mod:`kgitm.pipeline`): token ids, dependency adjacency, concept ids of the words,
sub-word pieces for a pretrained text encoder, scene-graph index tensors. Models do no string work;
``CaptionInputs.words`` is kept for people (pictures, error messages), never read by a model.

The image encoder receives :class:`ImageInputs`, the text encoder :class:`CaptionInputs`. All three
containers can be indexed by rows (``batch.index(rows)``), moved (``batch.to(device)``) and pinned
(``batch.pin_memory()``, which the ``DataLoader`` calls with ``pin_memory=True``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from kgitm.core.types import index_tree, to_device

__all__ = ["Batch", "CaptionInputs", "ImageInputs", "SubwordPieces", "pin_tree"]


def pin_tree(value):
    """``value`` with every tensor in pinned memory (same containers as :func:`~kgitm.core.types.to_device`)."""
    import dataclasses

    if isinstance(value, Tensor):
        return value.pin_memory()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: pin_tree(getattr(value, f.name)) for f in dataclasses.fields(value)})
    if isinstance(value, dict):
        return {k: pin_tree(v) for k, v in value.items()}
    return value


class _Tree:
    """Row indexing, device moves and pinning for the batch dataclasses."""

    def index(self, rows: slice | Tensor):
        return index_tree(self, rows)

    def to(self, device: torch.device | str, *, non_blocking: bool = False):
        return to_device(self, device, non_blocking=non_blocking)

    def pin_memory(self):
        return pin_tree(self)


@dataclass
class SubwordPieces(_Tree):
    """A pretrained tokenizer's pieces of a block of captions, and the word each piece belongs to.

    Shapes:
        input_ids: ``(B, P)``; attention_mask: ``(B, P)``; word: ``(B, P)`` long, the caption word
        (project token position) of each piece, ``-1`` for special tokens and padding.
    """

    input_ids: Tensor
    attention_mask: Tensor
    word: Tensor


@dataclass
class ImageInputs(_Tree):
    """Region features of a block of images.

    Shapes:
        features: ``(B, R, F)`` raw region features; region_mask: ``(B, R)`` bool (all-zero regions are
        padding); boxes: ``(B, R, 4)`` corners normalised by the image size, or ``None``; graph: the
        visual scene graphs as index tensors (SGM; see :mod:`kgitm.pipeline.scene_graphs`), or ``None``.
    """

    features: Tensor
    region_mask: Tensor
    boxes: Optional[Tensor] = None
    graph: Optional[dict[str, Tensor]] = None

    def __len__(self) -> int:
        return self.features.shape[0]


@dataclass
class CaptionInputs(_Tree):
    """Words of a block of captions (project tokens, :func:`kgitm.core.text.tokenize`).

    Shapes:
        token_ids: ``(B, L)`` vocabulary ids, 0 for padding; word_mask: ``(B, L)`` bool; lengths:
        ``(B,)``; words: ``B`` token lists (for people; models never read them); adjacency:
        ``(B, L, L)`` bool dependency edges or ``None``; concept_ids: ``(B, L, K)`` long concept indices
        of each word, ``-1`` padding, or ``None`` (no knowledge); pieces: sub-word pieces for a
        pretrained encoder or ``None``; graph: the textual scene graphs as index tensors (SGM) or ``None``.
    """

    token_ids: Tensor
    word_mask: Tensor
    lengths: Tensor
    words: list[list[str]]
    adjacency: Optional[Tensor] = None
    concept_ids: Optional[Tensor] = None
    pieces: Optional[SubwordPieces] = None
    graph: Optional[dict[str, Tensor]] = None

    def __len__(self) -> int:
        return self.token_ids.shape[0]


@dataclass
class Batch(_Tree):
    """``B`` captions, each with its image.

    Attributes:
        images: the image of each caption (an image can appear more than once).
        captions: the captions.
        image_index: ``(B,)`` the image's row in its split.
        caption_index: ``(B,)`` the caption's line in its caption set.
        swapped: with relation-swap negatives, each caption with the subject and object of one
            relation exchanged (same positions; a caption without a swap repeats its own words), or
            ``None``.
        swap_valid: ``(B,)`` bool, the caption has a real swap (with ``swapped``).
    """

    images: ImageInputs
    captions: CaptionInputs
    image_index: Tensor
    caption_index: Tensor
    swapped: Optional[CaptionInputs] = None
    swap_valid: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.image_index.shape[0]
