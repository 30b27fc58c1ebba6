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

from kgitm.matchers.base import EncodedCaptions, EncodedImages, Matcher
from kgitm.nn.functional import l2norm, masked_mean, masked_softmax


def cross_attention(
    cosine: Tensor,
    query_mask: Tensor,
    context_mask: Tensor,
    *,
    temperature: float,
    leaky_relu_slope: float = 0.1,
    eps: float = 1e-8,
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

    Shapes:
        cosine: ``(P, S, Q, C)``; masks broadcastable to it. Output: ``(P, S, Q, C)``, rows summing to
        one over valid context items.
    """
    s = F.leaky_relu(cosine, leaky_relu_slope)
    s = s.masked_fill(~query_mask, 0.0)
    s = l2norm(s, dim=-2, eps=eps)
    return masked_softmax(s * temperature, context_mask, dim=-1)


def attended_block_cosine(
    dots: Tensor,
    attention: Tensor,
    context_gram: Tensor,
    query_norm: Tensor,
    *,
    eps: float = 1e-8,
) -> Tensor:
    r"""Cosine between each query and its attended context vector, per block of dimensions.

    With the attended vector :math:`a_q = \sum_c \alpha_{qc} v_c` and ``B`` blocks of the feature
    dimension, returns :math:`\cos(e_q^{(b)}, a_q^{(b)})` for every block ``b`` without materialising
    :math:`a_q`: the numerator is :math:`\sum_c \alpha_{qc}\, e_q^{(b)} \cdot v_c^{(b)}` and the squared
    norm :math:`\alpha_q^\top G^{(b)} \alpha_q` uses the per-block Gram matrix of the context, so the
    memory per pair is ``O(Q C B)`` instead of ``O(Q D)``. ``B = 1`` is SCAN's relevance
    :math:`R(e_q, a_q)`; ``B > 1`` is GSMN's multi-block cosine. Each norm is floored at ``eps``
    (like :func:`torch.nn.functional.cosine_similarity`).

    Args:
        dots: raw dot products between query and context items, per block.
        attention: attention weights from :func:`cross_attention`.
        context_gram: per-block Gram matrix of each context owner's items.
        query_norm: per-block l2 norm of each query item.
        eps: floor of the norms.

    Shapes:
        dots: ``(P, S, Q, B, C)`` (contiguous is fastest); attention: ``(P, S, Q, C)``; context_gram: ``(P, C, B, C)``;
        query_norm: broadcastable to ``(P, S, Q, B)``. Output: ``(P, S, Q, B)``.
    """
    p, s, q, c = attention.shape
    column = attention.unsqueeze(-1)  # (P, S, Q, C, 1): the reductions over C are batched GEMVs
    numerator = torch.matmul(dots, column).squeeze(-1)
    weighted = torch.bmm(attention.reshape(p, s * q, c), context_gram.reshape(p, c, -1))
    squared_norm = torch.matmul(weighted.view(p, s, q, -1, c), column).squeeze(-1)
    context_norm = squared_norm.clamp_min(eps * eps).sqrt()
    return numerator / (query_norm.clamp_min(eps) * context_norm)


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

    pooled over the valid words by :math:`\log(\sum_j \exp(\lambda_2 R_j)) / \lambda_2` (``"lse"``) or
    the mean (``"mean"``). Image-to-text is the mirror: every region attends over the words and the
    relevances are pooled over valid regions. Every pair of the block is scored at once (no loop over
    images or captions); padding (``mask`` false) is never attended nor pooled.

    The paper's settings: t2i :math:`\lambda_1 = 9, \lambda_2 = 6` (the defaults); i2t
    :math:`\lambda_1 = 4, \lambda_2 = 5` (Flickr30K) or ``20`` (COCO).

    Args:
        direction: ``"t2i"`` (words attend over regions) or ``"i2t"`` (regions attend over words).
        lambda_softmax: inverse temperature :math:`\lambda_1` of the attention (default ``9.0``).
        aggregation: ``"lse"`` (LogSumExp pooling) or ``"mean"`` (default ``"lse"``).
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
        aggregation: Literal["lse", "mean"] = "lse",
        lambda_lse: float = 6.0,
        leaky_relu_slope: float = 0.1,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if direction not in ("t2i", "i2t"):
            raise ValueError(f"SCANMatcher: direction must be 't2i' or 'i2t', got {direction!r}")
        if aggregation not in ("lse", "mean"):
            raise ValueError(f"SCANMatcher: aggregation must be 'lse' or 'mean', got {aggregation!r}")
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

    def relevance(self, query: Tensor, query_mask: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        r"""Relevance :math:`R(q, a_q)` of every query item of every query owner to every context owner.

        Shapes:
            query: ``(S, Q, D)``, query_mask: ``(S, Q)``; context: ``(P, C, D)``, context_mask: ``(P, C)``.
            Output: ``(P, S, Q)``.
        """
        dots = torch.einsum("sqd,pcd->psqc", query, context).contiguous()
        query_norm = query.norm(dim=-1)
        context_norm = context.norm(dim=-1)
        cosine = dots / (
            query_norm.clamp_min(self.eps)[None, :, :, None] * context_norm.clamp_min(self.eps)[:, None, None, :]
        )
        attention = cross_attention(
            cosine,
            query_mask[None, :, :, None],
            context_mask[:, None, None, :],
            temperature=self.lambda_softmax,
            leaky_relu_slope=self.leaky_relu_slope,
            eps=self.eps,
        )
        del cosine
        gram = torch.bmm(context, context.transpose(1, 2)).unsqueeze(2)  # (P, C, 1, C)
        rel = attended_block_cosine(dots.unsqueeze(-2), attention, gram, query_norm[None, :, :, None], eps=self.eps)
        return rel.squeeze(-1)

    def forward(self, images: EncodedImages, captions: EncodedCaptions) -> Tensor:
        if self.direction == "t2i":
            rel = self.relevance(captions.features, captions.mask, images.features, images.mask)  # (N, M, L)
            mask = captions.mask.unsqueeze(0)
        else:
            rel = self.relevance(images.features, images.mask, captions.features, captions.mask)  # (M, N, R)
            mask = images.mask.unsqueeze(0)
        mask = mask.expand_as(rel)
        if self.aggregation == "lse":
            score = masked_logsumexp(rel, mask, dim=-1, temperature=self.lambda_lse)
        else:
            score = masked_mean(rel.unsqueeze(-1), mask, dim=-2).squeeze(-1)
        return score if self.direction == "t2i" else score.t()

    def pair_memory_bytes(self, images: EncodedImages, captions: EncodedCaptions) -> int:
        """Peak activation memory per pair in evaluation: about ten ``L x R`` maps (dot products,
        cosines, attention and the temporaries of the softmax and of the attended norm; measured
        about nine at ``R = 36, L = 16``)."""
        r = images.features.shape[1]
        l = captions.features.shape[1]
        itemsize = images.features.element_size()
        return itemsize * (10 * r * l + 4 * (r + l))
