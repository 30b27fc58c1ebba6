"""A matcher fused with the knowledge consensus score (CVSE, Wang et al. ECCV 2020)."""

from __future__ import annotations

from torch import Tensor

from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.knowledge.module import KnowledgeModule
from kgitm.matchers.base import Matcher


class KnowledgeFusedMatcher(Matcher):
    """A matcher whose score is fused with the knowledge consensus:
    ``(1 - w) * base(images, captions) + w * consensus(images, captions)``.

    Args:
        base: any matcher.
        knowledge: a bound :class:`~kgitm.knowledge.module.KnowledgeModule` in ``consensus`` or
            ``both`` mode (its ``consensus_weight`` is ``w``).

    Shapes:
        Output: ``(N, M)``.
    """

    def __init__(self, base: Matcher, knowledge: KnowledgeModule) -> None:
        super().__init__()
        self.base = base
        self.knowledge = knowledge

    def prepare_images(self, images: EncodedImages) -> EncodedImages:
        return self.base.prepare_images(images)

    def prepare_captions(self, captions: EncodedCaptions) -> EncodedCaptions:
        return self.base.prepare_captions(captions)

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        w = self.knowledge.consensus_weight
        return (1 - w) * self.base(images, captions) + w * self.knowledge.consensus_similarity(images, captions)

    def pair_memory_bytes(self, images: EncodedImages, captions: EncodedCaptions) -> int:
        return self.base.pair_memory_bytes(images, captions) + 4 * len(self.knowledge.concepts)
