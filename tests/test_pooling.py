"""The poolings of kgitm.encoders.pooling, VSE-infinity's GPO above all: its limits (one-hot weight on the
top rank is max pooling, uniform weights mean pooling), its weights (a distribution over the valid ranks
only, whatever the mask's layout), the positional encodings by hand, and the parameter names a converter of
the release's ``gpool.*`` keys relies on. GPO's per-pair parity with a naive loop is in
tests/test_matcher_contract.py (entry ``vse-infty-gpo``)."""

from __future__ import annotations

import math

import pytest
import torch

from kgitm.encoders.pooling import GPO, MaxPooling, MeanPooling, sinusoidal_positions


def _inputs(b: int = 5, n: int = 7, d: int = 6, *, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g)
    lengths = torch.tensor([n, 1, 3, n - 1, 2])[:b]
    mask = torch.arange(n)[None] < lengths[:, None]
    x[~mask] = 1e4  # padding larger than any valid value: read, it would win every sort
    return x, mask


def _gpo() -> GPO:
    torch.manual_seed(0)
    return GPO()


def test_one_hot_weight_on_the_top_rank_is_max_pooling(monkeypatch):
    gpo = _gpo()
    x, mask = _inputs()

    def top_rank(lengths: torch.Tensor, width: int) -> torch.Tensor:
        w = torch.zeros(len(lengths), width)
        w[:, 0] = 1.0
        return w

    monkeypatch.setattr(gpo, "rank_weights", top_rank)
    torch.testing.assert_close(gpo(x, mask), MaxPooling()(x, mask), atol=0, rtol=0)


def test_uniform_weights_are_mean_pooling(monkeypatch):
    gpo = _gpo()
    x, mask = _inputs()
    monkeypatch.setattr(gpo, "rank_weights", lambda lengths, width: (torch.arange(width)[None] < lengths[:, None]) / lengths[:, None])
    torch.testing.assert_close(gpo(x, mask), MeanPooling()(x, mask), atol=1e-6, rtol=0)


def test_rank_weights_are_a_distribution_over_the_valid_ranks():
    gpo = _gpo()
    lengths = torch.tensor([4, 1, 0, 4, 2])
    with torch.no_grad():
        w = gpo.rank_weights(lengths, 6)
    assert w.shape == (5, 6)
    valid = torch.arange(6)[None] < lengths[:, None]
    assert torch.all(w[~valid] == 0) and torch.all(w[valid] > 0)
    torch.testing.assert_close(w.sum(1), torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(w[0], w[3], atol=0, rtol=0)  # the same length, the same weights
    assert w[1, 0] == 1.0
    # the weights of a length do not depend on the other lengths in the batch, nor on the padded width
    with torch.no_grad():
        alone = gpo.rank_weights(torch.tensor([4]), 4)
    torch.testing.assert_close(alone[0], w[0, :4], atol=1e-6, rtol=0)


def test_a_lower_temperature_sharpens_the_weights():
    sharp, soft = _gpo(), _gpo()
    soft.temperature = 1.0
    lengths = torch.tensor([6])
    with torch.no_grad():
        ws, wf = sharp.rank_weights(lengths, 6)[0], soft.rank_weights(lengths, 6)[0]
    entropy = lambda w: -(w * w.clamp_min(1e-12).log()).sum()
    assert entropy(ws) < entropy(wf)
    torch.testing.assert_close(torch.softmax(wf.log() * 10, 0), ws, atol=1e-5, rtol=0)  # scores / 0.1 = 10 x scores / 1


def test_the_mask_need_not_be_a_prefix():
    """A row's length is its count of valid elements; where they sit does not matter (sorting ranks them)."""
    gpo = _gpo()
    x, mask = _inputs()
    g = torch.Generator().manual_seed(1)
    perm = torch.stack([torch.randperm(x.shape[1], generator=g) for _ in range(x.shape[0])])
    shuffled = torch.gather(x, 1, perm.unsqueeze(-1).expand_as(x))
    shuffled_mask = torch.gather(mask, 1, perm)
    assert not torch.equal(shuffled_mask, mask)
    with torch.no_grad():
        torch.testing.assert_close(gpo(shuffled, shuffled_mask), gpo(x, mask), atol=1e-6, rtol=0)


def test_padding_and_empty_rows():
    gpo = _gpo()
    x, mask = _inputs()
    mask[2] = False  # no valid element
    with torch.no_grad():
        out = gpo(x, mask)
        trimmed = gpo(x[:, :5], mask[:, :5])
    assert torch.all(out[2] == 0) and torch.isfinite(out).all()
    assert out.abs().max() < 100  # the 1e4 padding was never read
    keep = mask[:, 5:].any(1).logical_not()
    torch.testing.assert_close(trimmed[keep], out[keep], atol=1e-6, rtol=0)  # a narrower padded width changes nothing


def test_gradients_reach_the_features_and_every_parameter():
    gpo = _gpo()
    x, mask = _inputs()
    x = x.requires_grad_(True)
    gpo(x, mask).square().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.all(x.grad[~mask] == 0)
    for name, p in gpo.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_positional_encodings_by_hand():
    pe = sinusoidal_positions(3, 4)
    expected = torch.tensor([
        [0.0, 1.0, 0.0, 1.0],
        [math.sin(1.0), math.cos(1.0), math.sin(1.0 / 100), math.cos(1.0 / 100)],
        [math.sin(2.0), math.cos(2.0), math.sin(2.0 / 100), math.cos(2.0 / 100)],
    ])
    torch.testing.assert_close(pe, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(3, 5)


def test_parameter_names_and_shapes_are_the_releases():
    """The release's ``gpool.*`` keys (``../shared/docs/release-checkpoints.md``, VSE-infinity: bi-GRU 32 -> 32,
    ``gpool.linear.weight (1, 32)``) map onto GPO's by prefix alone; the positional encodings are not state."""
    shapes = {k: tuple(v.shape) for k, v in GPO(32, 32).state_dict().items()}
    gru = {f"gru.{w}_l0{s}": shape for s in ("", "_reverse")
           for w, shape in (("weight_ih", (96, 32)), ("weight_hh", (96, 32)), ("bias_ih", (96,)), ("bias_hh", (96,)))}
    assert shapes == {**gru, "linear.weight": (1, 32)}


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="pe_dim must be even"):
        GPO(31)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        GPO(temperature=0.0)


def test_the_matcher_holds_one_gpo_per_modality_and_fixed_poolings_add_no_state():
    from kgitm.matchers.global_embedding import GlobalEmbeddingMatcher

    m = GlobalEmbeddingMatcher("gpo", gpo_temperature=0.5)
    assert isinstance(m.image_pool, GPO) and isinstance(m.caption_pool, GPO) and m.image_pool is not m.caption_pool
    assert m.image_pool.temperature == m.caption_pool.temperature == 0.5
    keys = set(m.state_dict())
    assert {k.split(".", 1)[0] for k in keys} == {"image_pool", "caption_pool"} and "image_pool.linear.weight" in keys
    assert not torch.equal(m.image_pool.linear.weight, m.caption_pool.linear.weight)  # two modules, initialised apart
    for pooling in ("mean", "max"):  # checkpoints of the VSE++ matcher keep loading
        assert GlobalEmbeddingMatcher(pooling).state_dict() == {}
    with pytest.raises(ValueError, match="'mean', 'max' or 'gpo'"):
        GlobalEmbeddingMatcher("sum")  # type: ignore[arg-type]
