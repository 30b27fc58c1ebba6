"""Global-embedding matching (VSE++): one vector per image and per caption, cosine similarity."""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor

from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.matchers.base import Matcher
from kgitm.core.functional import l2norm, masked_mean


class GlobalEmbeddingMatcher(Matcher):
    """VSE++ (Faghri et al., BMVC 2018): pool each side into one vector, score by cosine.

    Regions are mean-pooled over valid regions; words are mean-pooled over valid words (the
    bag-of-regions baseline: no geometry, no cross attention), so the whole similarity matrix is one
    matrix product. The released VSE++ takes the uni-GRU's output at the last word instead
    (``caption_pooling="last"``) and one vector per image (``R = 1``).

    Args:
        pooling: ``"mean"`` (masked mean) or ``"max"`` (masked max) over regions and words.
        caption_pooling: the captions' pooling when it differs from ``pooling``: ``"mean"``, ``"max"``
            or ``"last"`` (the last valid word; VSE++'s release). Default ``None``: ``pooling``.
        normalize: l2-normalise the pooled vectors (default True; a converted VSE0, trained with
            ``--no_imgnorm``, scores its un-normalised image vectors and sets False).

    Shapes:
        images.features ``(N, R, D)``, captions.features ``(M, L, D)`` -> ``(N, M)``.
    """

    def __init__(
        self,
        pooling: Literal["mean", "max"] = "mean",
        *,
        caption_pooling: Optional[Literal["mean", "max", "last"]] = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "max"):
            raise ValueError(f"GlobalEmbeddingMatcher: pooling must be 'mean' or 'max', got {pooling!r}")
        if caption_pooling not in (None, "mean", "max", "last"):
            raise ValueError(f"GlobalEmbeddingMatcher: caption_pooling must be 'mean', 'max', 'last' or None, got {caption_pooling!r}")
        self.pooling = pooling
        self.caption_pooling = caption_pooling or pooling
        self.normalize = normalize

    def _pool(self, x: Tensor, mask: Tensor, how: str) -> Tensor:
        if how == "mean":
            pooled = masked_mean(x, mask, dim=1)
        elif how == "last":
            last = (mask.long().sum(1) - 1).clamp_min(0)
            pooled = x[torch.arange(x.shape[0], device=x.device), last]
        else:
            neg = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
            pooled = neg.masked_fill(~mask.any(1, keepdim=True), 0.0)
        return l2norm(pooled) if self.normalize else pooled

    def embed_images(self, images: EncodedImages) -> Tensor:
        return self._pool(images.features, images.mask, self.pooling)

    def embed_captions(self, captions: EncodedCaptions) -> Tensor:
        return self._pool(captions.features, captions.mask, self.caption_pooling)

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        return self.embed_images(images) @ self.embed_captions(captions).T

    def pair_memory_bytes(self, images: EncodedImages, captions: EncodedCaptions) -> int:
        return 4
