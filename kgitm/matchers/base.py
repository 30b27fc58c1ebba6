"""The matcher contract.

A :class:`Matcher` scores every image of one block against every caption of another block in one
batched computation (:class:`~kgitm.core.types.EncodedImages` x :class:`~kgitm.core.types.EncodedCaptions`
-> ``(N, M)``). Training uses the same call on the ``B x B`` batch; exact evaluation tiles the full
``N_img x N_cap`` matrix into blocks (:mod:`kgitm.eval.similarity`). ``tests/test_matcher_contract.py``
checks every matcher of this package against this contract (a new matcher adds one entry to its
``CONTRACT`` list).
"""

from __future__ import annotations

from torch import Tensor, nn

from kgitm.core.types import EncodedCaptions, EncodedImages


class Matcher(nn.Module):
    """Scores every image of a block against every caption of a block.

    Subclasses implement :meth:`forward` without Python loops over images or captions; the
    result for a pair must not depend on which other items are in the block.

    Shapes:
        Output: ``(N, M)`` similarities, images by captions.
    """

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:  # pragma: no cover
        raise NotImplementedError

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
