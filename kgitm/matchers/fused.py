"""A matcher fused with the knowledge consensus score (CVSE, Wang et al. ECCV 2020)."""

from __future__ import annotations

from torch import Tensor

from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.knowledge.module import KnowledgeModule
from kgitm.matchers.base import Details, Matcher, check_single_pair


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
        return self._fuse(self.base(images, captions), images, captions)

    def _fuse(self, base: Tensor, images: EncodedImages, captions: EncodedCaptions, details: Details = None) -> Tensor:
        w = self.knowledge.consensus_weight
        consensus = self.knowledge.consensus_similarity(images, captions, details)
        if details is not None:
            details["consensus"] = consensus
        return (1 - w) * base + w * consensus

    def alignments(self, images: EncodedImages, captions: EncodedCaptions) -> dict[str, Tensor]:
        """The base matcher's alignments (its ``score`` renamed ``base_score``), ``consensus_score``,
        the consensus concept distributions ``image_concepts (C,)`` and ``caption_concepts (C,)``, and the
        fused ``score`` (see :meth:`Matcher.alignments`)."""
        check_single_pair(images, captions, type(self).__name__)
        out = dict(self.base.alignments(images, captions))
        base = out.pop("score")
        d: dict = {}
        score = self._fuse(base.reshape(1, 1), images, captions, d)
        out.update(
            base_score=base, consensus_score=d["consensus"][0, 0], image_concepts=d["image_concepts"][0],
            caption_concepts=d["caption_concepts"][0], score=score[0, 0],
        )
        return out

    def pair_memory_bytes(self, images: EncodedImages, captions: EncodedCaptions) -> int:
        return self.base.pair_memory_bytes(images, captions) + 4 * len(self.knowledge.concepts)
