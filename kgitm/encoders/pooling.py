"""Pooling a set of features (regions of an image, words of a caption) into one vector.

The fixed poolings (:class:`MeanPooling`, :class:`MaxPooling`) and the learned one (:class:`GPO`) share one
call, ``pool(features, mask) -> (B, D)``, so a global-embedding matcher
(:class:`~kgitm.matchers.global_embedding.GlobalEmbeddingMatcher`) holds one of them per modality and the
config chooses which. They live with the encoders because they turn an encoder's per-element output into
the embedding of an item, and so that an encoder can use them as well as a matcher.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from kgitm.core.functional import masked_mean, masked_softmax

__all__ = ["GPO", "LastPooling", "MaxPooling", "MeanPooling", "sinusoidal_positions"]


class MeanPooling(nn.Module):
    """Mean over the valid elements (VSE++ on regions; the bag-of-regions baseline).

    Shapes:
        features ``(B, N, D)``, mask ``(B, N)`` -> ``(B, D)``; a row without valid elements gives zeros.
    """

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return masked_mean(features, mask, dim=1)


class MaxPooling(nn.Module):
    """Maximum per dimension over the valid elements.

    Shapes:
        features ``(B, N, D)``, mask ``(B, N)`` -> ``(B, D)``; a row without valid elements gives zeros.
    """

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        top = features.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
        return top.masked_fill(~mask.any(1, keepdim=True), 0.0)


class LastPooling(nn.Module):
    """The last valid element (VSE++'s release: the uni-GRU's output at the last word, ``<end>``).

    Shapes:
        features ``(B, N, D)``, mask ``(B, N)`` (a prefix of valid elements) -> ``(B, D)``; a row without
        valid elements gives its first element.
    """

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        last = (mask.long().sum(1) - 1).clamp_min(0)
        return features[torch.arange(features.shape[0], device=features.device), last]


def sinusoidal_positions(length: int, dim: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The sine/cosine encodings of positions ``0 .. length-1`` (Vaswani et al., NeurIPS 2017):
    ``pe[k, 2i] = sin(k / 10000^(2i/dim))``, ``pe[k, 2i+1] = cos(k / 10000^(2i/dim))``.

    Shapes:
        output: ``(length, dim)``; ``dim`` must be even.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_positions: dim must be even (sine and cosine pairs), got {dim}")
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(position * frequency)
    pe[:, 1::2] = torch.cos(position * frequency)
    return pe.to(dtype)


class GPO(nn.Module):
    r"""The Generalised Pooling Operator of VSE-infinity (Chen et al., "Learning the Best Pooling Strategy
    for Visual Semantic Embedding", CVPR 2021; release github.com/woodfrog/vse_infty, ``lib/modules/aggr/gpo.py``).

    Each dimension of the ``n`` valid features is sorted in descending order and pooled with weights that
    depend on the rank ``k`` only (and on ``n``):

    .. math::
        \mathbf{v}_d = \sum_{k=0}^{n-1} \theta_k \, \mathrm{sort}_\downarrow(\mathbf{x}_{\cdot d})_k, \qquad
        \theta = \mathrm{softmax}\big(\mathbf{w}^\top \mathrm{BiGRU}(\mathrm{PE}(0..n-1)) / \tau\big),

    where PE is the sine/cosine encoding of the rank, the bi-GRU's two directions are averaged, and
    :math:`\mathbf{w}` is a linear scorer without bias. One-hot weights on rank 0 give max pooling, uniform
    weights mean pooling. Padded elements never weigh: they are sorted after every valid one and get weight 0
    (the release does the same through the lengths; here the length of a row is its number of valid elements,
    so the mask need not be a prefix). The weights are computed once per distinct length of the batch.

    Parameter names follow the release (``gru.*``, ``linear.weight``), so its ``gpool.*`` keys map by prefix.

    Args:
        pe_dim: size of the positional encoding, the GRU's input (the release's ``d_pe``; default 32).
        hidden_dim: the GRU's hidden size per direction (the release's ``d_hidden``; default 32).
        temperature: ``tau`` of the softmax over ranks (default 0.1, the release's ``scores / 0.1``).

    Shapes:
        features ``(B, N, D)``, mask ``(B, N)`` -> ``(B, D)``; a row without valid elements gives zeros.
        :meth:`rank_weights`: lengths ``(B,)`` -> ``(B, N)``.
    """

    def __init__(self, pe_dim: int = 32, hidden_dim: int = 32, *, temperature: float = 0.1) -> None:
        super().__init__()
        if pe_dim % 2:
            raise ValueError(f"GPO: pe_dim must be even (sine and cosine pairs), got {pe_dim}")
        if temperature <= 0:
            raise ValueError(f"GPO: temperature must be > 0, got {temperature}")
        self.pe_dim = pe_dim
        self.hidden_dim = hidden_dim
        self.temperature = temperature
        self.gru = nn.GRU(pe_dim, hidden_dim, 1, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(hidden_dim, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the release keeps PyTorch's default initialisation of both layers
        self.gru.reset_parameters()
        self.linear.reset_parameters()

    def rank_weights(self, lengths: Tensor, width: int) -> Tensor:
        """The weight of each rank ``0 .. width-1`` for rows of ``lengths`` valid elements; ranks at or past
        a row's length weigh 0 (a row of length 0 is all zeros)."""
        unique, inverse = lengths.unique(return_inverse=True)
        steps = unique.clamp_min(1)  # a GRU needs one step; rows of length 0 are masked out below
        longest = int(steps.max())
        pe = sinusoidal_positions(longest, self.pe_dim, device=lengths.device, dtype=self.linear.weight.dtype)
        packed = nn.utils.rnn.pack_padded_sequence(
            pe.expand(len(unique), -1, -1), steps.cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=max(longest, width))
        out = (out[..., : self.hidden_dim] + out[..., self.hidden_dim :]) / 2
        scores = self.linear(out).squeeze(-1)[:, :width] / self.temperature
        valid = torch.arange(width, device=lengths.device).unsqueeze(0) < unique.unsqueeze(1)
        return masked_softmax(scores, valid, dim=1)[inverse]

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        lengths = mask.sum(1)
        weights = self.rank_weights(lengths, features.shape[1]).to(features.dtype)
        ranked = features.masked_fill(~mask.unsqueeze(-1), float("-inf")).sort(dim=1, descending=True).values
        valid = torch.arange(features.shape[1], device=features.device).unsqueeze(0) < lengths.unsqueeze(1)
        ranked = ranked.masked_fill(~valid.unsqueeze(-1), 0.0)
        return (ranked * weights.unsqueeze(-1)).sum(1)
