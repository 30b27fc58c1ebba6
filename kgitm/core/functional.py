"""Shared tensor helpers: written once, imported everywhere (l2 normalisation, masked pooling,
masked softmax, scratch products). All functions are device-agnostic and batch-vectorised."""

from __future__ import annotations

import torch
from torch import Tensor


def l2norm(x: Tensor, dim: int = -1, eps: float = 1e-8) -> Tensor:
    """Divide ``x`` by its l2 norm along ``dim``, floored at ``eps`` (zero vectors stay zero)."""
    if dim in (-1, x.dim() - 1):
        return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)
    # torch.norm over an inner axis is not vectorised on the CPU (30x slower than this at SCAN's
    # block shapes); the floor before the root keeps the gradient finite at zero vectors
    return x * x.square().sum(dim, keepdim=True).clamp_min(eps * eps).rsqrt()


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
    return scratch_mul(out, mask.to(out.dtype))


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


def scratch_mul(x: Tensor, y: Tensor) -> Tensor:
    """``x * y``, written into ``x`` when no gradient is recorded (``x`` is then scratch: the caller
    must not use it again). In evaluation this saves a temporary of ``x``'s size, which on the CPU
    costs fresh pages as well as bandwidth; under autograd it is the plain product. ``y`` must
    broadcast to ``x``'s shape."""
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        return x * y
    return x.mul_(y)
