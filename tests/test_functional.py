"""Shared tensor helpers (kgitm.core.functional) against plain formulas."""

from __future__ import annotations

import pytest
import torch

from kgitm.core.functional import l2norm, masked_softmax, scratch_mul


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2])
def test_l2norm_matches_the_formula_on_every_axis(dim):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 6, generator=g, dtype=torch.float64)
    x[1, 2] = 0.0  # a zero vector on the last axis
    x[:, 3, 4] = 0.0  # and one on the middle axis
    ref = x / torch.sqrt((x * x).sum(dim, keepdim=True)).clamp_min(1e-8)
    torch.testing.assert_close(l2norm(x, dim=dim), ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dim", [-1, -2])
def test_l2norm_gradient_is_finite_at_zero_vectors(dim):
    x = torch.zeros(3, 4, 5, requires_grad=True)
    l2norm(x, dim=dim).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_scratch_mul_writes_into_its_first_argument_only_without_autograd():
    x, y = torch.randn(3, 4), torch.randn(1, 4)
    expected = x * y
    with torch.no_grad():
        out = scratch_mul(x, y)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(out, expected, atol=0, rtol=0)

    a = torch.randn(3, 4, requires_grad=True)
    x = a * 1.0
    kept = x.detach().clone()
    out = scratch_mul(x, y)
    assert out.data_ptr() != x.data_ptr()
    torch.testing.assert_close(x.detach(), kept, atol=0, rtol=0)
    out.sum().backward()
    torch.testing.assert_close(a.grad, y.expand(3, 4), atol=0, rtol=0)


def test_masked_softmax_gives_zeros_for_a_fully_masked_row():
    logits = torch.randn(2, 3)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    out = masked_softmax(logits, mask, dim=-1)
    torch.testing.assert_close(out[0, [0, 2]], torch.softmax(logits[0, [0, 2]], -1))
    assert out[0, 1] == 0 and (out[1] == 0).all()
