"""Global-embedding matching (VSE++): one vector per image and per caption, cosine similarity."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.matchers.base import Matcher
from kgitm.core.functional import l2norm, masked_mean


class GlobalEmbeddingMatcher(Matcher):
    """VSE++ (Faghri et al., BMVC 2018): pool each side into one vector, score by cosine.

    Regions are mean-pooled over valid regions; words are mean-pooled over valid words (the
    bag-of-regions baseline: no geometry, no cross attention), so the whole similarity matrix is one
    matrix product.

    Args:
        pooling: ``"mean"`` (masked mean) or ``"max"`` (masked max) over regions and words.

    Shapes:
        images.features ``(N, R, D)``, captions.features ``(M, L, D)`` -> ``(N, M)``.
    """

    def __init__(self, pooling: Literal["mean", "max"] = "mean") -> None:
        super().__init__()
        self.pooling = pooling

    def _pool(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.pooling == "mean":
            return l2norm(masked_mean(x, mask, dim=1))
        neg = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        return l2norm(neg.masked_fill(~mask.any(1, keepdim=True), 0.0))

    def embed_images(self, images: EncodedImages) -> Tensor:
        return self._pool(images.features, images.mask)

    def embed_captions(self, captions: EncodedCaptions) -> Tensor:
        return self._pool(captions.features, captions.mask)

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        return self.embed_images(images) @ self.embed_captions(captions).T

    def pair_memory_bytes(self, images: EncodedImages, captions: EncodedCaptions) -> int:
        return 4
