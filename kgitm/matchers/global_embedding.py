"""Global-embedding matching (VSE++, VSE-infinity): one vector per image and per caption, cosine similarity."""

from __future__ import annotations

from typing import Literal, Optional

from torch import Tensor, nn

from kgitm.core.functional import l2norm
from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.encoders.pooling import GPO, LastPooling, MaxPooling, MeanPooling
from kgitm.matchers.base import Matcher


class GlobalEmbeddingMatcher(Matcher):
    """Pool each side into one vector, l2-normalise, score by the dot product (cosine).

    VSE++ (Faghri et al., BMVC 2018) on regions mean-pools the valid regions and words (the
    bag-of-regions baseline: no geometry, no cross attention). VSE-infinity (Chen et al., "Learning the
    Best Pooling Strategy for Visual Semantic Embedding", CVPR 2021; github.com/woodfrog/vse_infty) learns
    the pooling: a :class:`~kgitm.encoders.pooling.GPO` for the images and another for the captions (two
    modules, as the release's ``img_enc.gpool`` and ``txt_enc.gpool``). Either way the similarity matrix is
    one matrix product of the pooled embeddings. VSE++'s own release takes the uni-GRU's output at the
    last word instead (``caption_pooling="last"``) and one vector per image (``R = 1``).

    Args:
        pooling: ``"mean"`` (masked mean), ``"max"`` (masked max per dimension) or ``"gpo"`` (learned
            weights over the values sorted per dimension) over regions and over words (default ``"mean"``).
        gpo_pe_dim: GPO's positional-encoding size (default 32, the release's ``GPO(32, 32)``).
        gpo_hidden_dim: GPO's bi-GRU hidden size (default 32).
        gpo_temperature: GPO's softmax temperature (default 0.1).
        caption_pooling: the captions' pooling when it differs from ``pooling``: ``"mean"``, ``"max"``,
            ``"gpo"`` or ``"last"`` (the last valid word; VSE++'s release). Default ``None``: ``pooling``.
        normalize: l2-normalise the pooled vectors (default True; a converted VSE0, trained with
            ``--no_imgnorm``, scores its un-normalised image vectors and sets False).

    Attributes:
        image_pool, caption_pool: the pooling modules (parameters only for ``"gpo"``: ``image_pool.gru.*``,
            ``image_pool.linear.weight``, the same under ``caption_pool``).

    Shapes:
        images.features ``(N, R, D)``, captions.features ``(M, L, D)`` -> ``(N, M)``.
    """

    def __init__(
        self,
        pooling: Literal["mean", "max", "gpo"] = "mean",
        *,
        gpo_pe_dim: int = 32,
        gpo_hidden_dim: int = 32,
        gpo_temperature: float = 0.1,
        caption_pooling: Optional[Literal["mean", "max", "gpo", "last"]] = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.caption_pooling = caption_pooling or pooling
        self.normalize = normalize
        self.image_pool = self._make_pool(pooling, gpo_pe_dim, gpo_hidden_dim, gpo_temperature)
        self.caption_pool = self._make_pool(self.caption_pooling, gpo_pe_dim, gpo_hidden_dim, gpo_temperature, captions=True)

    @staticmethod
    def _make_pool(pooling: str, pe_dim: int, hidden_dim: int, temperature: float, *, captions: bool = False) -> nn.Module:
        if pooling == "last" and captions:
            return LastPooling()
        if pooling == "mean":
            return MeanPooling()
        if pooling == "max":
            return MaxPooling()
        if pooling == "gpo":
            return GPO(pe_dim, hidden_dim, temperature=temperature)
        raise ValueError(f"GlobalEmbeddingMatcher: pooling must be 'mean', 'max' or 'gpo', got {pooling!r}")

    def _finish(self, pooled: Tensor) -> Tensor:
        return l2norm(pooled) if self.normalize else pooled

    def embed_images(self, images: EncodedImages) -> Tensor:
        return self._finish(self.image_pool(images.features, images.mask))

    def embed_captions(self, captions: EncodedCaptions) -> Tensor:
        return self._finish(self.caption_pool(captions.features, captions.mask))

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        return self.embed_images(images) @ self.embed_captions(captions).T

    def pair_memory_bytes(self, images: EncodedImages, captions: EncodedCaptions) -> int:
        return 4
