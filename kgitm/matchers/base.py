"""The matcher contract.

A :class:`Matcher` scores every image of one block against every caption of another block in one
batched computation (:class:`~kgitm.core.types.EncodedImages` x :class:`~kgitm.core.types.EncodedCaptions`
-> ``(N, M)``). Training uses the same call on the ``B x B`` batch; exact evaluation tiles the full
``N_img x N_cap`` matrix into blocks (:mod:`kgitm.eval.similarity`). ``tests/test_matcher_contract.py``
checks every matcher of this package against this contract (a new matcher adds one entry to its
``CONTRACT`` list).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from kgitm.core.types import EncodedCaptions, EncodedImages

#: a dict the scoring code fills with its intermediate tensors (:meth:`Matcher.alignments`), or ``None``
Details = Optional[dict]


def check_single_pair(images: EncodedImages, captions: EncodedCaptions, who: str) -> None:
    """Refuse a block that is not one image and one caption (what :meth:`Matcher.alignments` explains)."""
    if len(images) != 1 or len(captions) != 1:
        raise ValueError(
            f"{who}.alignments explains one pair: got {len(images)} images and {len(captions)} captions; "
            "index the pair first (images.index(slice(i, i + 1)), captions.index(slice(j, j + 1)))"
        )


class Matcher(nn.Module):
    """Scores every image of a block against every caption of a block.

    Subclasses implement :meth:`forward` without Python loops over images or captions; the
    result for a pair must not depend on which other items are in the block.

    Shapes:
        Output: ``(N, M)`` similarities, images by captions.
    """

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def alignments(self, images: EncodedImages, captions: EncodedCaptions) -> dict[str, Tensor]:
        """What the score of one pair is made of: named tensors for one image and one caption.

        Computed by the same internal function as :meth:`forward` (it records its intermediate
        tensors when asked), so the values are the ones that made the score, not a re-computation.
        Every matcher returns ``"score"`` (a 0-d tensor, equal to ``forward(images, captions)[0, 0]``);
        the others are matcher-specific, with the pair axes dropped:

        - SCAN (:class:`~kgitm.matchers.scan.SCANMatcher`): ``word_region_attention (L, R)`` and
          ``word_relevance (L,)`` (t2i), or ``region_word_attention (R, L)`` and ``region_relevance (R,)`` (i2t);
        - GSMN (:class:`~kgitm.matchers.gsmn.GSMNMatcher`): both attentions, the node-level matching
          (``word_node_match (L,)``, ``region_node_match (R,)``: mean block cosine of a node with its
          attended vector), the structure-level node scores (``word_score (L,)``, ``region_score (R,)``),
          ``text_graph_weights (L, L)``, ``t2i_score`` and ``i2t_score``;
        - SGRAF (:class:`~kgitm.matchers.sgraf.SGRAFMatcher`): ``word_region_attention (L, R)`` of its local
          alignments;
        - SGM (:class:`~kgitm.matchers.sgm.SGM`): ``object_similarity (O_t, O_v)``, ``object_match (O_t,)``
          (each text object's best visual object), the same for relations, ``object_score``, ``relation_score``;
        - the knowledge-fused matcher: its base matcher's, plus ``base_score``, ``consensus_score`` and the
          consensus concept distributions ``image_concepts (C,)``, ``caption_concepts (C,)``.

        The default (matchers with nothing inside a pair to show, e.g. VSE++) is ``{"score"}``.

        Shapes:
            images: one image (``N = 1``); captions: one caption (``M = 1``).
        """
        check_single_pair(images, captions, type(self).__name__)
        return {"score": self(images, captions)[0, 0]}

    def bind(self, embed_dim: int) -> None:
        """Create the layers that depend on the encoders' output size ``D``.

        :class:`~kgitm.models.MatchingModel` calls it once with its ``embed_dim``, so a config names
        the joint size once. Matchers without such layers (the default) ignore it; a matcher that
        was given a size of its own checks that it is the same.
        """

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
