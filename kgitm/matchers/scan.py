"""SCAN: stacked cross attention between words and regions, vectorised over a block of pairs.

Lee et al., "Stacked Cross Attention for Image-Text Matching", ECCV 2018.

The two building blocks, :func:`cross_attention` (SCAN's normalised attention) and
:func:`attended_block_cosine` (cosine between a query and its attended context, per block of
dimensions), are shared with GSMN's node-level matching (:mod:`kgitm.matchers.gsmn`).

Layout used by both helpers: ``P`` items own the *context* (the modality attended over), ``S`` items
own the *queries*; for text-to-image ``P = N`` images with ``C = R`` regions and ``S = M`` captions
with ``Q = L`` words, for image-to-text the roles swap.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.matchers.base import Details, Matcher, check_single_pair
from kgitm.core.functional import l2norm, masked_mean, masked_softmax, scratch_mul

#: key of the context Gram matrix in ``images.extra`` (t2i) or ``captions.extra`` (i2t).
_GRAM = "scan_gram"


def cross_attention(
    cosine: Tensor,
    query_mask: Tensor,
    context_mask: Tensor,
    *,
    temperature: float,
    leaky_relu_slope: float = 0.1,
    eps: float = 1e-8,
    query_dim: int = -2,
    context_dim: int = -1,
) -> Tensor:
    r"""SCAN's attention of every query item over the context items.

    ``s = LeakyReLU(cos)``, l2-normalised over the *query* axis (over valid queries only, as in the
    paper's :math:`[s_{ij}]_+ / \sqrt{\sum_j [s_{ij}]_+^2}`), then
    ``softmax_c(temperature * s)`` over valid context items.

    Args:
        cosine: cosine similarity of every query item with every context item.
        query_mask: true for real query items, broadcastable to ``cosine``.
        context_mask: true for real context items, broadcastable to ``cosine``.
        temperature: inverse softmax temperature (SCAN's :math:`\lambda_1`).
        leaky_relu_slope: negative slope of the LeakyReLU (default ``0.1``, as in SCAN's code).
        eps: floor of the l2 norm.
        query_dim: the axis of the query items (default ``-2``).
        context_dim: the axis of the context items (default ``-1``). A caller may pass whichever
            layout it holds: on the CPU a softmax over a short last axis (a dozen words) is several
            times slower than over an outer one.

    Shapes:
        cosine: ``(P, S, Q, C)`` with the default axes; masks broadcastable to it. Output: the shape
        and axes of ``cosine``, summing to one over valid context items.
    """
    s = F.leaky_relu(cosine, leaky_relu_slope).masked_fill_(~query_mask, 0.0)  # in place: a fresh tensor
    s = l2norm(s, dim=query_dim, eps=eps)
    return masked_softmax(s * temperature, context_mask, dim=context_dim)


def attended_block_cosine(
    numerator: Tensor,
    attention: Tensor,
    context_gram: Tensor,
    query_norm: Tensor,
    *,
    eps: float = 1e-8,
    context_first: bool = False,
) -> Tensor:
    r"""Cosine between each query and its attended context vector, per block of dimensions.

    With the attended vector :math:`a_q = \sum_c \alpha_{qc} v_c` and ``B`` blocks of the feature
    dimension, returns :math:`\cos(e_q^{(b)}, a_q^{(b)})` for every block ``b`` without materialising
    :math:`a_q`: the caller passes the numerator :math:`e_q^{(b)} \cdot a_q^{(b)} = \sum_c \alpha_{qc}\,
    e_q^{(b)} \cdot v_c^{(b)}` (a reduction of the dot products it already holds, in whatever layout
    they are), and the squared norm :math:`\alpha_q^\top G^{(b)} \alpha_q` comes from the per-block
    Gram matrix of the context, so the memory per pair is ``O(Q C B)`` instead of ``O(Q D)``.
    ``B = 1`` is SCAN's relevance :math:`R(e_q, a_q)`; ``B > 1`` is GSMN's multi-block cosine. Each
    norm is floored at ``eps`` (like :func:`torch.nn.functional.cosine_similarity`).

    Args:
        numerator: :math:`\sum_c \alpha_{qc}\, e_q^{(b)} \cdot v_c^{(b)}`.
        attention: attention weights from :func:`cross_attention`.
        context_gram: per-block Gram matrix of each context owner's items.
        query_norm: per-block l2 norm of each query item.
        eps: floor of the norms.
        context_first: ``attention`` is laid out ``(P, C, S, Q)``, contiguous, instead of
            ``(P, S, Q, C)``; then the sum over the context runs over an outer axis, which on the
            CPU is several times faster when ``C`` is short (image-to-text: a dozen words).

    Shapes:
        numerator: ``(P, S, Q, B)``; attention: ``(P, S, Q, C)`` (or ``(P, C, S, Q)``); context_gram:
        ``(P, C, B, C)``; query_norm: broadcastable to ``(P, S, Q, B)``. Output: ``(P, S, Q, B)``.
    """
    if context_first:
        p, c, s, q = attention.shape
        columns = attention.reshape(p, c, s * q)
        # rows (b, c') of the symmetric Gram blocks times the attention columns: (P, B, C', S Q)
        weighted = torch.bmm(context_gram.reshape(p, c, -1).transpose(1, 2), columns).view(p, -1, c, s * q)
        squared_norm = scratch_mul(weighted, columns.unsqueeze(1)).sum(2)  # (P, B, S Q)
        squared_norm = squared_norm.view(p, -1, s, q).permute(0, 2, 3, 1)
    else:
        p, s, q, c = attention.shape
        weighted = torch.bmm(attention.reshape(p, s * q, c), context_gram.reshape(p, c, -1))
        squared_norm = scratch_mul(weighted.view(p, s, q, -1, c), attention.unsqueeze(-2)).sum(-1)
    context_norm = squared_norm.clamp_min(eps * eps).sqrt()
    return numerator / (query_norm.clamp_min(eps) * context_norm)


def _gram(x: Tensor) -> Tensor:
    """Gram matrix of each item's vectors: ``(P, C, D) -> (P, C, C)``."""
    return torch.bmm(x, x.transpose(1, 2))


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int, *, temperature: float) -> Tensor:
    r""":math:`\log(\sum \exp(\lambda x)) / \lambda` over valid positions (SCAN's LSE pooling);
    zero where no position is valid."""
    neg = torch.finfo(x.dtype).min
    pooled = torch.logsumexp((x * temperature).masked_fill(~mask, neg), dim=dim) / temperature
    return torch.where(mask.any(dim), pooled, torch.zeros_like(pooled))


class SCANMatcher(Matcher):
    r"""Stacked cross attention (SCAN) between the words of a caption and the regions of an image.

    From `"Stacked Cross Attention for Image-Text Matching" <https://arxiv.org/abs/1803.08024>`_
    (Lee et al., ECCV 2018). For text-to-image, with :math:`s_{ij} = \cos(v_i, e_j)`:

    .. math::
        s'_{ij} = \frac{\mathrm{LeakyReLU}(s_{ij})}{\sqrt{\sum_j \mathrm{LeakyReLU}(s_{ij})^2}},\quad
        \alpha_{ij} = \operatorname{softmax}_i(\lambda_1 s'_{ij}),\quad
        a_j = \sum_i \alpha_{ij} v_i,\quad R_j = \cos(e_j, a_j),

    pooled over the valid words by :math:`\log(\sum_j \exp(\lambda_2 R_j)) / \lambda_2` (``"lse"``),
    the mean (``"mean"``), or, as the release's ``--agg_func Max``/``Sum`` allow, the maximum
    (``"max"``) or the sum (``"sum"``). Image-to-text is the mirror: every region attends over the words and the
    relevances are pooled over valid regions. Every pair of the block is scored at once (no loop over
    images or captions); padding (``mask`` false) is never attended nor pooled.

    The paper's settings: t2i :math:`\lambda_1 = 9, \lambda_2 = 6` (the defaults); i2t
    :math:`\lambda_1 = 4, \lambda_2 = 5` (Flickr30K) or ``20`` (COCO).

    Args:
        direction: ``"t2i"`` (words attend over regions) or ``"i2t"`` (regions attend over words).
        lambda_softmax: inverse temperature :math:`\lambda_1` of the attention (default ``9.0``).
        aggregation: ``"lse"`` (LogSumExp pooling), ``"mean"``, ``"max"`` or ``"sum"`` (default ``"lse"``).
        lambda_lse: :math:`\lambda_2` of the LogSumExp pooling (default ``6.0``).
        leaky_relu_slope: slope of the LeakyReLU before the normalisation (default ``0.1``).
        eps: floor of every norm (default ``1e-8``).

    Shapes:
        images.features: ``(N, R, D)``, images.mask: ``(N, R)``; captions.features: ``(M, L, D)``,
        captions.mask: ``(M, L)``. Output: ``(N, M)``.
    """

    def __init__(
        self,
        direction: Literal["t2i", "i2t"] = "t2i",
        *,
        lambda_softmax: float = 9.0,
        aggregation: Literal["lse", "mean", "max", "sum"] = "lse",
        lambda_lse: float = 6.0,
        leaky_relu_slope: float = 0.1,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if direction not in ("t2i", "i2t"):
            raise ValueError(f"SCANMatcher: direction must be 't2i' or 'i2t', got {direction!r}")
        if aggregation not in ("lse", "mean", "max", "sum"):
            raise ValueError(f"SCANMatcher: aggregation must be 'lse', 'mean', 'max' or 'sum', got {aggregation!r}")
        self.direction = direction
        self.lambda_softmax = lambda_softmax
        self.aggregation = aggregation
        self.lambda_lse = lambda_lse
        self.leaky_relu_slope = leaky_relu_slope
        self.eps = eps

    def extra_repr(self) -> str:
        return (
            f"direction={self.direction!r}, lambda_softmax={self.lambda_softmax}, "
            f"aggregation={self.aggregation!r}, lambda_lse={self.lambda_lse}"
        )

    def relevance(
        self,
        query: Tensor,
        query_mask: Tensor,
        context: Tensor,
        context_mask: Tensor,
        context_gram: Tensor | None = None,
        *,
        details: Details = None,
    ) -> Tensor:
        r"""Relevance :math:`R(q, a_q)` of every query item of every query owner to every context owner.

        ``context_gram`` is the Gram matrix of each context owner's items, ``(P, C, C)``, when it was
        computed once for the block (:meth:`prepare_images` / :meth:`prepare_captions`). The work
        is laid out ``(P, C, S, Q)``, the order one GEMM writes the dot products in, so nothing of
        the block's size is permuted and the softmax runs over an outer axis (on the CPU several
        times faster than over a short last axis such as a dozen words). ``details``, when given, receives
        the attention (``"attention"``, ``(P, C, S, Q)``: every query item's weights over the context items).

        Shapes:
            query: ``(S, Q, D)``, query_mask: ``(S, Q)``; context: ``(P, C, D)``, context_mask: ``(P, C)``.
            Output: ``(P, S, Q)``.
        """
        p, c, d = context.shape
        s, q, _ = query.shape
        query_norm = query.norm(dim=-1).clamp_min(self.eps)
        context_norm = context.norm(dim=-1).clamp_min(self.eps)
        dots = torch.mm(context.reshape(p * c, d), query.reshape(s * q, d).t()).view(p, c, s, q)
        cosine = dots / (context_norm[:, :, None, None] * query_norm[None, None])
        attention = cross_attention(
            cosine,
            query_mask[None, None],
            context_mask[:, :, None, None],
            temperature=self.lambda_softmax,
            leaky_relu_slope=self.leaky_relu_slope,
            eps=self.eps,
            query_dim=-1,
            context_dim=1,
        )  # (P, C, S, Q)
        del cosine
        if details is not None:
            details["attention"] = attention
        gram = (_gram(context) if context_gram is None else context_gram).unsqueeze(2)  # (P, C, 1, C)
        numerator = scratch_mul(dots, attention).sum(1).unsqueeze(-1)  # (P, S, Q, 1); the last use of dots
        rel = attended_block_cosine(
            numerator, attention, gram, query_norm[None, :, :, None], eps=self.eps, context_first=True
        )
        return rel.squeeze(-1)

    def prepare_images(self, images: EncodedImages) -> EncodedImages:
        """Text-to-image: adds the regions' Gram matrix (the attended contexts' norms) to
        ``images.extra``, computed once per image block instead of once per caption block."""
        if self.direction != "t2i":
            return images
        extra = {**(images.extra or {}), _GRAM: _gram(images.features)}
        return EncodedImages(images.features, images.mask, images.boxes, extra)

    def prepare_captions(self, captions: EncodedCaptions) -> EncodedCaptions:
        """Image-to-text: adds the words' Gram matrix to ``captions.extra``."""
        if self.direction != "i2t":
            return captions
        extra = {**(captions.extra or {}), _GRAM: _gram(captions.features)}
        return EncodedCaptions(captions.features, captions.mask, captions.adjacency, extra)

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        return self._score(images, captions)

    def _score(self, images: EncodedImages, captions: EncodedCaptions, details: Details = None) -> Tensor:
        """The ``(N, M)`` scores; ``details`` (when given) receives the attention and the relevances."""
        if self.direction == "t2i":
            gram = (images.extra or {}).get(_GRAM)
            rel = self.relevance(captions.features, captions.mask, images.features, images.mask, gram, details=details)  # (N, M, L)
            mask = captions.mask.unsqueeze(0)
        else:
            gram = (captions.extra or {}).get(_GRAM)
            rel = self.relevance(images.features, images.mask, captions.features, captions.mask, gram, details=details)  # (M, N, R)
            mask = images.mask.unsqueeze(0)
        if details is not None:
            details["relevance"] = rel
        mask = mask.expand_as(rel)
        if self.aggregation == "lse":
            score = masked_logsumexp(rel, mask, dim=-1, temperature=self.lambda_lse)
        elif self.aggregation == "mean":
            score = masked_mean(rel.unsqueeze(-1), mask, dim=-2).squeeze(-1)
        elif self.aggregation == "sum":
            score = rel.masked_fill(~mask, 0.0).sum(-1)
        else:
            score = rel.masked_fill(~mask, torch.finfo(rel.dtype).min).amax(-1).masked_fill(~mask.any(-1), 0.0)
        return score if self.direction == "t2i" else score.t()

    def alignments(self, images: EncodedImages, captions: EncodedCaptions) -> dict[str, Tensor]:
        """The attention and the relevances that made one pair's score (see :meth:`Matcher.alignments`):
        t2i ``word_region_attention (L, R)`` (each word's weights over the regions) and
        ``word_relevance (L,)``; i2t ``region_word_attention (R, L)`` and ``region_relevance (R,)``."""
        check_single_pair(images, captions, type(self).__name__)
        details: dict = {}
        score = self._score(images, captions, details)
        # attention (P, C, S, Q) with one context owner and one query owner: (C, Q), queries last
        attention = details["attention"][0, :, 0, :].t()
        if self.direction == "t2i":
            return {"word_region_attention": attention, "word_relevance": details["relevance"][0, 0], "score": score[0, 0]}
        return {"region_word_attention": attention, "region_relevance": details["relevance"][0, 0], "score": score[0, 0]}

    def pair_memory_bytes(self, images: EncodedImages, captions: EncodedCaptions) -> int:
        """Peak activation memory per pair in evaluation: about ten ``L x R`` maps (dot products,
        cosines, attention and the temporaries of the softmax and of the attended norm; measured
        about nine at ``R = 36, L = 16``)."""
        r = images.features.shape[1]
        l = captions.features.shape[1]
        itemsize = images.features.element_size()
        return itemsize * (10 * r * l + 4 * (r + l))
