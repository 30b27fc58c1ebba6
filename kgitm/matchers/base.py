"""The contract between encoders and matchers.

Encoders turn a batch into :class:`EncodedImages` / :class:`EncodedCaptions` (local features with
masks, plus structure); a :class:`Matcher` scores every image of one block against every caption of
another block in one batched computation. Training uses the same call on the ``B x B`` batch; exact
evaluation tiles the full ``N_img x N_cap`` matrix into blocks (:mod:`kgitm.eval.similarity`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
from torch import Tensor, nn


@dataclass
class EncodedImages:
    """Encoded regions of a block of images.

    Shapes:
        features: ``(N, R, D)``; mask: ``(N, R)`` bool, true for real regions (padding is false and
        must never be attended); boxes: ``(N, R, 4)`` corners normalised to ``[0, 1]`` by the image
        size, or ``None``; scene_graph: optional matcher-specific structure (SGM).
    """

    features: Tensor
    mask: Tensor
    boxes: Optional[Tensor] = None
    extra: Optional[dict] = None

    def __len__(self) -> int:
        return self.features.shape[0]

    def index(self, idx: slice | Tensor) -> "EncodedImages":
        return _index(self, idx)

    def to(self, device: torch.device) -> "EncodedImages":
        return _to(self, device)


@dataclass
class EncodedCaptions:
    """Encoded words of a block of captions.

    Shapes:
        features: ``(M, L, D)``; mask: ``(M, L)`` bool, true for real words; adjacency: ``(M, L, L)``
        bool dependency edges between word positions (symmetric, no self loops), or ``None``;
        extra: optional matcher-specific structure (SGM, concepts).
    """

    features: Tensor
    mask: Tensor
    adjacency: Optional[Tensor] = None
    extra: Optional[dict] = None

    def __len__(self) -> int:
        return self.features.shape[0]

    def index(self, idx: slice | Tensor) -> "EncodedCaptions":
        return _index(self, idx)

    def to(self, device: torch.device) -> "EncodedCaptions":
        return _to(self, device)


def _index(obj, idx):
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, Tensor):
            out[f.name] = v[idx]
        elif isinstance(v, dict):
            out[f.name] = {k: (t[idx] if isinstance(t, Tensor) else t) for k, t in v.items()}
        else:
            out[f.name] = v
    return replace(obj, **out)


def _to(obj, device):
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, Tensor):
            out[f.name] = v.to(device)
        elif isinstance(v, dict):
            out[f.name] = {k: (t.to(device) if isinstance(t, Tensor) else t) for k, t in v.items()}
        else:
            out[f.name] = v
    return replace(obj, **out)


class Matcher(nn.Module):
    """Scores every image of a block against every caption of a block.

    Subclasses implement :meth:`forward` without Python loops over images or captions; the
    result for a pair must not depend on which other items are in the block.

    Shapes:
        Output: ``(N, M)`` similarities, images by captions.
    """

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def prepare_images(self, images: EncodedImages) -> EncodedImages:
        """Caption-independent work on a block of images, done once per block before scoring.

        :mod:`kgitm.eval.similarity` calls it once per image block and reuses the result for every
        caption block; :meth:`forward` must give the same scores with or without it (GSMN computes
        its visual-graph kernel weights here). The default returns ``images`` unchanged.
        """
        return images

    def prepare_captions(self, captions: EncodedCaptions) -> EncodedCaptions:
        """Image-independent work on a block of captions (see :meth:`prepare_images`); the default
        returns ``captions`` unchanged."""
        return captions

    def pair_memory_bytes(self, images: EncodedImages, captions: EncodedCaptions) -> int:
        """Approximate peak activation memory per (image, caption) pair, used to size blocks.

        The default assumes an ``R x L`` attention map plus ``(R + L) x D`` attended features per pair.
        """
        r, d = images.features.shape[1:]
        l = captions.features.shape[1]
        return 4 * (3 * r * l + 2 * (r + l) * d)
