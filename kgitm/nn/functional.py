"""Shared tensor helpers: written once, imported everywhere (l2 normalisation, masked pooling,
masked softmax). All functions are device-agnostic and batch-vectorised."""

from __future__ import annotations

import torch
from torch import Tensor


def l2norm(x: Tensor, dim: int = -1, eps: float = 1e-8) -> Tensor:
    """Divide ``x`` by its l2 norm along ``dim`` (zero vectors stay zero)."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)


def masked_mean(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean of ``x`` over ``dim`` counting only positions where ``mask`` is true.

    Shapes:
        x: ``(..., N, D)`` with ``dim`` pointing at ``N``; mask: ``(..., N)``.
    """
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


def masked_softmax(logits: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax over ``dim`` restricted to ``mask``; a fully masked row gives zeros (never NaN)."""
    neg = torch.finfo(logits.dtype).min
    logits = logits.masked_fill(~mask, neg)
    out = torch.softmax(logits, dim=dim)
    return out * mask.to(out.dtype)


def segment_mean(x: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    """Mean of the rows of ``x`` that share a segment id (e.g. sub-word pieces -> words); rows with a
    negative id are left out and an empty segment gives zeros.

    Shapes:
        x: ``(N, D)``; segment: ``(N,)`` long; output: ``(S, D)`` with ``S = num_segments``.
    """
    keep = segment >= 0
    x, segment = x[keep], segment[keep]
    total = x.new_zeros(num_segments, x.shape[-1]).index_add(0, segment, x)
    count = torch.bincount(segment, minlength=num_segments).clamp_min(1).to(x.dtype)
    return total / count.unsqueeze(-1)
