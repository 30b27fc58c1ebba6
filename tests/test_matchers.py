"""SCAN and GSMN matchers and the blocked similarity: vectorised block vs a naive per-pair loop.

The naive references below follow the papers' formulas for one (image, caption) pair at a time,
slicing away the padding, the way the public code loops over captions; they share no code with
the matchers except the box geometry (the input format) and GSMN's learned layers (weights).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kgitm.eval.similarity import compute_similarity, plan_blocks
from kgitm.core.geometry import polar_pseudo_coordinates
from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.matchers.base import Matcher
from kgitm.matchers.gsmn import TRAIN_CHUNK_CAPTIONS, GSMNMatcher
from kgitm.matchers.scan import SCANMatcher

TOL = 1e-5


# ---------------------------------------------------------------------------- random inputs


def make_images(n: int, r: int, d: int, *, seed: int = 0, min_regions: int = 2) -> EncodedImages:
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(n, r, d, generator=g), dim=-1)
    valid = torch.randint(min_regions, r + 1, (n,), generator=g)
    valid[0] = r
    mask = torch.arange(r)[None] < valid[:, None]
    xy = torch.rand(n, r, 2, generator=g) * 0.6
    wh = torch.rand(n, r, 2, generator=g) * 0.4 + 0.05
    boxes = torch.cat([xy, xy + wh], -1)
    return EncodedImages(feats, mask, boxes)


def make_captions(m: int, l: int, d: int, *, seed: int = 1, min_words: int = 1) -> EncodedCaptions:
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(m, l, d, generator=g), dim=-1)
    lengths = torch.randint(min_words, l + 1, (m,), generator=g)
    lengths[0] = l
    mask = torch.arange(l)[None] < lengths[:, None]
    adj = torch.zeros(m, l, l, dtype=torch.bool)
    for k in range(m):  # a random tree over the valid words, like a dependency parse
        for j in range(1, int(lengths[k])):
            head = int(torch.randint(0, j, (1,), generator=g))
            adj[k, head, j] = adj[k, j, head] = True
    return EncodedCaptions(feats, mask, adj)


def perturb_padding(images: EncodedImages, captions: EncodedCaptions):
    """Same items with garbage in every padded position."""
    vf = images.features.clone()
    vf[~images.mask] = 100.0 * torch.randn(int((~images.mask).sum()), vf.shape[-1])
    bx = images.boxes.clone()
    bx[~images.mask] = torch.rand(int((~images.mask).sum()), 4)
    uf = captions.features.clone()
    uf[~captions.mask] = 100.0 * torch.randn(int((~captions.mask).sum()), uf.shape[-1])
    adj = captions.adjacency.clone()
    pad = ~captions.mask
    adj |= pad[:, :, None] & torch.ones_like(adj)  # padded words linked to everything
    adj |= adj.clone().transpose(1, 2)
    return EncodedImages(vf, images.mask, bx), EncodedCaptions(uf, captions.mask, adj)


# ---------------------------------------------------------------------------- naive references


def naive_scan_pair(v, e, *, direction, lambda_softmax, aggregation, lambda_lse, slope=0.1):
    """One pair, valid items only: ``v (R', D)`` regions, ``e (L', D)`` words."""
    if direction == "t2i":
        query, context = e, v
    else:
        query, context = v, e
    s = F.normalize(query, dim=1) @ F.normalize(context, dim=1).t()  # (Q, C)
    s = F.leaky_relu(s, slope)
    s = F.normalize(s, dim=0)  # over the query items
    a = torch.softmax(lambda_softmax * s, dim=1)  # over the context items
    attended = a @ context
    rel = F.cosine_similarity(query, attended, dim=1)
    if aggregation == "lse":
        return torch.log(torch.exp(lambda_lse * rel).sum()) / lambda_lse
    if aggregation == "max":
        return rel.max()
    if aggregation == "sum":
        return rel.sum()
    return rel.mean()


def naive_scan(images, captions, **kw):
    n, m = len(images), len(captions)
    out = torch.zeros(n, m)
    for k in range(m):  # loop over captions, like shard_xattn
        e = captions.features[k][captions.mask[k]]
        for i in range(n):
            v = images.features[i][images.mask[i]]
            out[i, k] = naive_scan_pair(v, e, **kw)
    return out


def naive_block_cosine(query, context, lam, num_blocks, slope=0.1):
    s = F.normalize(query, dim=1) @ F.normalize(context, dim=1).t()
    s = F.normalize(F.leaky_relu(s, slope), dim=0)
    a = torch.softmax(lam * s, dim=1)
    attended = a @ context
    qb = query.view(query.shape[0], num_blocks, -1)
    ab = attended.view(attended.shape[0], num_blocks, -1)
    return F.cosine_similarity(qb, ab, dim=-1)  # (Q, B)


def naive_gsmn_pair(mt: GSMNMatcher, v, boxes, e, adj):
    nb, k = mt.num_blocks, mt.num_kernels
    # node level
    x_t = naive_block_cosine(e, v, mt.lambda_attention, nb)  # (L', B)
    x_v = naive_block_cosine(v, e, mt.lambda_attention, nb)  # (R', B)
    # textual graph
    L = e.shape[0]
    en = F.normalize(e, dim=1)
    logits = mt.lambda_text_graph * en @ en.t()
    if mt.graph == "sparse":
        allowed = adj | adj.t() | torch.eye(L, dtype=torch.bool)
        logits = logits.masked_fill(~allowed, -math.inf)
    A = torch.softmax(logits, dim=1)
    h_t = torch.zeros(L, mt.text_conv.out_features)
    for i in range(L):
        if mt.messages == "own":  # the release: every edge carries node i's own vector; weights sum to one
            h_t[i] = mt.text_conv(x_t[i])
            continue
        for j in range(L):
            h_t[i] += A[i, j] * (mt.text_conv.weight @ x_t[j])
    s_t2i = mt.text_mlp(h_t).mean()
    # visual graph: Gaussian kernels over the polar coordinates of this image's own boxes
    R = v.shape[0]
    coords = polar_pseudo_coordinates(boxes[None], convention=mt.angle_convention)[0]  # (R', R', 2)
    hk = mt.visual_conv.out_features // k
    W = mt.visual_conv.weight.view(k, hk, nb)
    h_v = torch.zeros(R, k, hk)
    if mt.kernel_style == "release":  # widths, radians, normalised over the kernels for each (i, j)
        rho, theta = coords[..., 0], coords[..., 1] * math.pi
        raw = torch.zeros(R, R, k)
        for kk in range(k):
            d_theta = (theta - mt.kernel_mean[kk, 1]).abs()
            d_theta = torch.minimum(d_theta, 2 * math.pi - d_theta)
            s_rho, s_theta = mt.kernel_width[kk]
            raw[..., kk] = torch.exp(-0.5 * (rho - mt.kernel_mean[kk, 0]) ** 2 / (s_rho**2 + 1e-14)
                                     - 0.5 * d_theta**2 / (s_theta**2 + 1e-14))
        weights = raw / raw.sum(-1, keepdim=True)
    else:  # precisions, angles in units of pi, normalised over the neighbours j for each kernel
        weights = torch.zeros(R, R, k)
        for kk in range(k):
            mu, tau = mt.kernel_mean[kk], mt.kernel_precision[kk]
            d = (coords - mu).abs()
            d[..., 1] = torch.minimum(d[..., 1], 2 - d[..., 1])
            w = torch.exp(-0.5 * ((d * tau) ** 2).sum(-1))
            weights[..., kk] = w / w.sum(1, keepdim=True)
    for kk in range(k):
        for i in range(R):
            if mt.messages == "own":  # the release: sum_j w_k(u_ij) x_i
                h_v[i, kk] = W[kk] @ (weights[i, :, kk].sum() * x_v[i])
            else:
                h_v[i, kk] = W[kk] @ (weights[i, :, kk] @ x_v)
    s_i2t = mt.visual_mlp(h_v.reshape(R, -1)).mean()
    return s_t2i + s_i2t


def naive_gsmn(mt, images, captions):
    out = torch.zeros(len(images), len(captions))
    for c in range(len(captions)):
        keep = captions.mask[c]
        e = captions.features[c][keep]
        adj = captions.adjacency[c][keep][:, keep]
        for i in range(len(images)):
            sel = images.mask[i]
            out[i, c] = naive_gsmn_pair(mt, images.features[i][sel], images.boxes[i][sel], e, adj)
    return out


def gsmn(graph: str, **kw) -> GSMNMatcher:
    torch.manual_seed(0)
    kw.setdefault("lambda_text_graph", 2.0)
    mt = GSMNMatcher(graph, num_blocks=4, num_kernels=4, structure_dim=8, mlp_dim=6, **kw)
    if mt.kernel_style == "precision":
        with torch.no_grad():  # spread the kernels so that geometry matters
            mt.kernel_precision.uniform_(1.0, 4.0)
    return mt


SCAN_SETTINGS = [
    dict(direction="t2i", lambda_softmax=9.0, aggregation="lse", lambda_lse=6.0),
    dict(direction="t2i", lambda_softmax=9.0, aggregation="mean", lambda_lse=6.0),
    dict(direction="i2t", lambda_softmax=4.0, aggregation="lse", lambda_lse=5.0),
    dict(direction="i2t", lambda_softmax=4.0, aggregation="mean", lambda_lse=5.0),
    dict(direction="t2i", lambda_softmax=9.0, aggregation="max", lambda_lse=6.0),  # the release's --agg_func Max / Sum
    dict(direction="i2t", lambda_softmax=4.0, aggregation="sum", lambda_lse=5.0),
]


def scan(setting: dict) -> SCANMatcher:
    s = dict(setting)
    return SCANMatcher(s.pop("direction"), **s)


# ---------------------------------------------------------------------------- parity


@pytest.mark.parametrize("setting", SCAN_SETTINGS, ids=lambda s: f"{s['direction']}-{s['aggregation']}")
def test_scan_matches_naive_loop(setting):
    images = make_images(5, 7, 16, seed=3)
    captions = make_captions(6, 9, 16, seed=4)
    got = scan(setting)(images, captions)
    want = naive_scan(images, captions, **setting)
    assert got.shape == (5, 6)
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("style", ["release", "precision"])
@pytest.mark.parametrize("graph", ["sparse", "dense"])
def test_gsmn_matches_naive_loop(graph, style):
    images = make_images(4, 6, 16, seed=5)
    captions = make_captions(5, 7, 16, seed=6)
    mt = gsmn(graph, kernel_style=style)
    with torch.no_grad():
        got = mt(images, captions)
        want = naive_gsmn(mt, images, captions)
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("messages", ["neighbours", "own"])
def test_gsmn_chunked_training_forward_equals_the_whole_block_and_the_naive_loop(messages):
    """Under autograd GSMN scores captions in chunks (train_caption_chunk): the scores equal the naive
    per-pair loop, and the gradients of every input and parameter equal the whole block's."""
    images = make_images(4, 6, 16, seed=11)
    captions = make_captions(7, 8, 16, seed=12)
    outs = {}
    for chunk in (None, 3, 1):
        mt = gsmn("sparse", messages=messages, train_caption_chunk=chunk)
        v = images.features.clone().requires_grad_(True)
        u = captions.features.clone().requires_grad_(True)
        s = mt(EncodedImages(v, images.mask, images.boxes), EncodedCaptions(u, captions.mask, captions.adjacency))
        assert mt._train_chunk(images, captions) == chunk
        (s * torch.linspace(-1, 2, s.numel()).view_as(s)).sum().backward()
        outs[chunk] = (s.detach(), v.grad, u.grad, [p.grad.clone() for p in mt.parameters()])
        with torch.no_grad():
            want = naive_gsmn(mt, images, captions)
        torch.testing.assert_close(s.detach(), want, atol=TOL, rtol=0)
    for chunk in (3, 1):
        for got, ref in zip(outs[chunk][:3], outs[None][:3]):
            torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
        for got, ref in zip(outs[chunk][3], outs[None][3]):
            torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def test_gsmn_auto_training_chunk_is_fixed_on_the_cpu_and_off_elsewhere():
    images = make_images(4, 6, 16, seed=11)
    captions = make_captions(7, 8, 16, seed=12)
    mt = gsmn("sparse")  # train_caption_chunk="auto"
    with torch.no_grad():
        assert mt._train_chunk(images, captions) is None  # evaluation: compute_similarity sizes the blocks
    assert mt._train_chunk(images, captions) == TRAIN_CHUNK_CAPTIONS
    meta = EncodedImages(features=images.features.to("meta"), mask=images.mask.to("meta"), boxes=images.boxes.to("meta"))
    assert mt._train_chunk(meta, captions) is None  # not a CPU: one block


def all_matchers():
    return [scan(s) for s in SCAN_SETTINGS] + [gsmn("sparse"), gsmn("dense"), gsmn("sparse", kernel_style="precision")]


@pytest.mark.parametrize("matcher", all_matchers(), ids=lambda m: repr(m).replace("\n", "")[:60])
def test_blocked_equals_whole_and_prepared_equals_plain(matcher):
    images = make_images(7, 6, 16, seed=7)
    captions = make_captions(11, 8, 16, seed=8)
    with torch.no_grad():
        whole = matcher(images, captions)
        prepared = matcher(matcher.prepare_images(images), matcher.prepare_captions(captions))
    torch.testing.assert_close(prepared, whole, atol=1e-6, rtol=0)
    blocked = compute_similarity(matcher, images, captions, image_block=3, caption_block=4)
    assert blocked.dtype == torch.float32 and blocked.device.type == "cpu"
    torch.testing.assert_close(blocked, whole, atol=TOL, rtol=0)
    budget = compute_similarity(matcher, images, captions, memory_budget_mb=1e-3)
    torch.testing.assert_close(budget, whole, atol=TOL, rtol=0)


@pytest.mark.parametrize("matcher", all_matchers(), ids=lambda m: repr(m).replace("\n", "")[:60])
def test_permutations_permute_the_matrix(matcher):
    images = make_images(6, 6, 16, seed=9)
    captions = make_captions(7, 8, 16, seed=10)
    pi, pc = torch.randperm(6), torch.randperm(7)
    with torch.no_grad():
        s = matcher(images, captions)
        sp = matcher(images.index(pi), captions.index(pc))
    torch.testing.assert_close(sp, s[pi][:, pc], atol=TOL, rtol=0)


# ---------------------------------------------------------------------------- GSMN structure


def test_gsmn_sparse_score_depends_on_dependency_edges():
    images = make_images(3, 6, 16, seed=11)
    captions = make_captions(2, 7, 16, seed=12)
    captions.mask[:] = True
    mt = gsmn("sparse")
    rewired = captions.adjacency.clone()
    rewired[0] = False  # caption 0 becomes a chain 0-1-2-...; caption 1 untouched
    idx = torch.arange(6)
    rewired[0, idx, idx + 1] = rewired[0, idx + 1, idx] = True
    assert not torch.equal(rewired[0], captions.adjacency[0])
    with torch.no_grad():
        before = mt(images, captions)
        after = mt(images, EncodedCaptions(captions.features, captions.mask, rewired))
        no_edges = mt(images, EncodedCaptions(captions.features, captions.mask, torch.zeros_like(rewired)))
    assert (after[:, 0] - before[:, 0]).abs().min() > 1e-4
    assert (no_edges[:, 0] - before[:, 0]).abs().min() > 1e-4
    torch.testing.assert_close(after[:, 1], before[:, 1], atol=1e-6, rtol=0)
    # the dense graph ignores the parse
    dense = gsmn("dense")
    with torch.no_grad():
        torch.testing.assert_close(
            dense(images, captions), dense(images, EncodedCaptions(captions.features, captions.mask, rewired))
        )


def test_gsmn_each_image_uses_its_own_boxes():
    n = 10
    images = make_images(n, 6, 16, seed=13, min_regions=6)  # all regions valid
    captions = make_captions(5, 7, 16, seed=14)
    mt = gsmn("sparse")
    with torch.no_grad():
        s = mt(images, captions)
        # a rotation of the boxes between images changes every row
        rolled = EncodedImages(images.features, images.mask, images.boxes.roll(1, dims=0))
        s_rolled = mt(rolled, captions)
        assert ((s_rolled - s).abs().amax(dim=1) > 1e-4).all()
        # the release's trap: image i scored with the boxes of image i // 5
        trap = EncodedImages(images.features, images.mask, images.boxes[torch.arange(n) // 5])
        s_trap = mt(trap, captions)
        assert ((s_trap - s).abs().amax(dim=1)[1:] > 1e-4).all()
        # and image i's row is exactly what image i alone gives with its own boxes
        for i in (0, 3, 7):
            one = mt(images.index(slice(i, i + 1)), captions)
            torch.testing.assert_close(one[0], s[i], atol=1e-6, rtol=0)
    blocked = compute_similarity(mt, images, captions, image_block=3, caption_block=2)
    torch.testing.assert_close(blocked, s, atol=TOL, rtol=0)


def test_gsmn_block_count_must_divide_the_dimension():
    mt = GSMNMatcher("dense", num_blocks=16)
    with pytest.raises(ValueError, match="not divisible by num_blocks=16"):
        mt(make_images(2, 4, 20), make_captions(2, 4, 20))
    with pytest.raises(ValueError, match="structure_dim"):
        GSMNMatcher(num_kernels=8, structure_dim=12)


def test_gsmn_release_kernels_are_initialised_and_normalised_as_released():
    mt = GSMNMatcher(num_kernels=8)
    assert mt.kernel_style == "release" and not hasattr(mt, "kernel_precision")
    assert ((mt.kernel_mean[:, 1] >= -math.pi) & (mt.kernel_mean[:, 1] <= math.pi)).all()
    assert ((mt.kernel_width >= 0) & (mt.kernel_width <= 1)).all()
    boxes = make_images(2, 6, 16, seed=3, min_regions=6).boxes
    w = mt.visual_kernel_weights(boxes, torch.ones(2, 6, dtype=torch.bool))  # [n, i, k, j]
    torch.testing.assert_close(w.sum(2), torch.ones(2, 6, 6))  # each neighbour's weights over the kernels
    masked = torch.ones(2, 6, dtype=torch.bool)
    masked[0, 4:] = False
    assert (mt.visual_kernel_weights(boxes, masked)[0, :, :, 4:] == 0).all()  # padding is no neighbour


def test_gsmn_kernel_initialisation():
    mt = GSMNMatcher(num_kernels=4, structure_dim=8, kernel_style="precision", kernel_precision_init=(3.0, 5.0))
    assert ((mt.kernel_mean[:, 0] >= 0) & (mt.kernel_mean[:, 0] <= 1)).all()
    assert ((mt.kernel_mean[:, 1] >= -1) & (mt.kernel_mean[:, 1] <= 1)).all()
    torch.testing.assert_close(mt.kernel_precision, torch.tensor([[3.0, 5.0]] * 4))
    torch.testing.assert_close(GSMNMatcher(num_kernels=4, structure_dim=8, kernel_style="precision").kernel_precision, torch.ones(4, 2))
    # a kernel pointing right (theta 0) weights the box on the right of box 0 over the box on its
    # left; sharper precisions make that contrast larger
    boxes = torch.tensor([[[0.4, 0.4, 0.6, 0.6], [0.7, 0.4, 0.9, 0.6], [0.1, 0.4, 0.3, 0.6]]])
    ratio = {}
    for tau in (1.0, 4.0):
        m = GSMNMatcher(num_kernels=4, structure_dim=8, kernel_style="precision", kernel_precision_init=(tau, tau))
        with torch.no_grad():
            m.kernel_mean.copy_(torch.tensor([[0.3, 0.0], [0.3, 0.5], [0.3, 1.0], [0.3, -0.5]]))
        w = m.visual_kernel_weights(boxes, torch.ones(1, 3, dtype=torch.bool))
        ratio[tau] = float(w[0, 0, 0, 1] / w[0, 0, 0, 2])
    assert 1.5 < ratio[1.0] < 2.0 and ratio[4.0] > 1000  # exp(0.5) and exp(8) by the formula
    for bad in ((0.0, 1.0), (1.0,)):
        with pytest.raises(ValueError, match="kernel_precision_init"):
            GSMNMatcher(kernel_precision_init=bad)


def test_gsmn_sparse_requires_adjacency_and_boxes():
    images, captions = make_images(2, 4, 16), make_captions(2, 4, 16)
    with pytest.raises(ValueError, match="adjacency"):
        gsmn("sparse")(images, EncodedCaptions(captions.features, captions.mask))
    with pytest.raises(ValueError, match="boxes"):
        gsmn("sparse")(EncodedImages(images.features, images.mask), captions)


# ---------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("matcher", all_matchers(), ids=lambda m: repr(m).replace("\n", "")[:60])
def test_padding_is_never_used(matcher):
    images = make_images(4, 8, 16, seed=15, min_regions=1)
    captions = make_captions(5, 9, 16, seed=16, min_words=1)
    assert (~images.mask).any() and (~captions.mask).any()
    noisy_images, noisy_captions = perturb_padding(images, captions)
    with torch.no_grad():
        s = matcher(images, captions)
        s_noisy = matcher(noisy_images, noisy_captions)
    torch.testing.assert_close(s_noisy, s, atol=TOL, rtol=0)


@pytest.mark.parametrize("matcher", all_matchers(), ids=lambda m: repr(m).replace("\n", "")[:60])
def test_degenerate_inputs_give_finite_scores(matcher):
    images = make_images(3, 5, 16, seed=17, min_regions=1)
    captions = make_captions(4, 6, 16, seed=18)
    captions.mask[1] = False
    captions.mask[1, 0] = True  # single-token caption
    captions.adjacency[2] = False  # caption with no edges
    images.mask[2] = False
    images.mask[2, 0] = True  # a single valid region
    with torch.no_grad():
        s = matcher(images, captions)
        zeros = matcher(
            EncodedImages(torch.zeros_like(images.features), images.mask, images.boxes),
            EncodedCaptions(torch.zeros_like(captions.features), captions.mask, captions.adjacency),
        )
    assert torch.isfinite(s).all() and torch.isfinite(zeros).all()
    # single-token caption / single-region image still equal the naive formulas (SCAN)
    if isinstance(matcher, SCANMatcher):
        setting = dict(
            direction=matcher.direction,
            lambda_softmax=matcher.lambda_softmax,
            aggregation=matcher.aggregation,
            lambda_lse=matcher.lambda_lse,
        )
        torch.testing.assert_close(s, naive_scan(images, captions, **setting), atol=TOL, rtol=0)
    else:
        with torch.no_grad():
            torch.testing.assert_close(s, naive_gsmn(matcher, images, captions), atol=TOL, rtol=0)


@pytest.mark.parametrize("matcher", all_matchers(), ids=lambda m: repr(m).replace("\n", "")[:60])
def test_gradients_flow(matcher):
    images = make_images(3, 5, 16, seed=19, min_regions=1)
    captions = make_captions(3, 6, 16, seed=20)
    images.features.requires_grad_(True)
    captions.features.requires_grad_(True)
    zero_img = EncodedImages(torch.zeros(1, 5, 16, requires_grad=True), images.mask[:1], images.boxes[:1])
    s = matcher(images, captions)
    margin = (0.2 + s - s.diag()[:, None]).clamp_min(0).sum()  # hinge on the block
    (margin + matcher(zero_img, captions).sum()).backward()
    for t in (images.features, captions.features, zero_img.features):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    assert images.features.grad.abs().sum() > 0 and captions.features.grad.abs().sum() > 0
    for name, p in matcher.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("matcher", all_matchers(), ids=lambda m: repr(m).replace("\n", "")[:60])
def test_training_and_evaluation_paths_agree(matcher):
    """Evaluation reduces the block's dot products in place (kgitm.core.functional.scratch_mul),
    training keeps them for autograd: the same scores either way, and the inputs are left as they were."""
    images = make_images(4, 6, 16, seed=23)
    captions = make_captions(5, 7, 16, seed=24)
    before = (images.features.clone(), captions.features.clone())
    images.features.requires_grad_(True)
    trained = matcher(images, captions)
    assert trained.requires_grad
    with torch.inference_mode():
        evaluated = matcher(images, captions)
    torch.testing.assert_close(evaluated, trained.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(images.features.detach(), before[0], atol=0, rtol=0)
    torch.testing.assert_close(captions.features, before[1], atol=0, rtol=0)


# ---------------------------------------------------------------------------- block planning


class _Recorder(Matcher):
    """Wraps a matcher and records the block shapes it is called with."""

    def __init__(self, inner: Matcher) -> None:
        super().__init__()
        self.inner = inner
        self.shapes: list[tuple[int, int]] = []

    def forward(self, images, captions):
        self.shapes.append((len(images), len(captions)))
        return self.inner(images, captions)

    def pair_memory_bytes(self, images, captions):
        return self.inner.pair_memory_bytes(images, captions)


@pytest.mark.parametrize("matcher", [scan(SCAN_SETTINGS[0]), gsmn("dense")], ids=["scan", "gsmn"])
def test_blocks_respect_the_memory_budget(matcher):
    images = make_images(13, 6, 16, seed=21)
    captions = make_captions(17, 8, 16, seed=22)
    pair = matcher.pair_memory_bytes(images, captions)
    budget_mb = 20 * pair / 2**20  # room for 20 pairs
    rec = _Recorder(matcher)
    got = compute_similarity(rec, images, captions, memory_budget_mb=budget_mb)
    assert len(rec.shapes) > 1
    assert all(n * m * pair <= budget_mb * 2**20 for n, m in rec.shapes)
    assert max(n * m for n, m in rec.shapes) >= 10  # and the budget is used
    assert sum(n * m for n, m in rec.shapes) == 13 * 17
    with torch.no_grad():
        torch.testing.assert_close(got, matcher(images, captions), atol=TOL, rtol=0)


class _WidthRecorder(_Recorder):
    def __init__(self, inner):
        super().__init__(inner)
        self.widths = []

    def forward(self, images, captions):
        self.widths.append((images.mask.shape[1], captions.mask.shape[1], images.mask, captions.mask))
        return super().forward(images, captions)


@pytest.mark.parametrize("matcher", all_matchers(), ids=lambda m: repr(m).replace("\n", "")[:60])
def test_trimmed_length_sorted_blocks_equal_untrimmed(matcher):
    """Visiting items longest first with each block cut to its longest item changes no score, and
    the blocks really are narrower than the padded arrays."""
    images = make_images(9, 10, 16, seed=31)
    captions = make_captions(23, 12, 16, seed=32)
    rec = _WidthRecorder(matcher)
    trimmed = compute_similarity(rec, images, captions, image_block=3, caption_block=5)
    plain = compute_similarity(matcher, images, captions, image_block=3, caption_block=5, trim_padding=False)
    with torch.no_grad():
        whole = matcher(images, captions)
    torch.testing.assert_close(trimmed, plain, atol=TOL, rtol=0)
    torch.testing.assert_close(trimmed, whole, atol=TOL, rtol=0)
    assert min(r for r, _, _, _ in rec.widths) < 10 and min(l for _, l, _, _ in rec.widths) < 12
    for r, l, image_mask, caption_mask in rec.widths:  # each block keeps its longest item whole
        assert image_mask[:, -1].any() and caption_mask[:, -1].any()


def test_cpu_blocks_are_capped_by_cpu_block_mb():
    matcher = scan(SCAN_SETTINGS[0])
    images = make_images(13, 6, 16, seed=41)
    captions = make_captions(17, 8, 16, seed=42)
    pair = matcher.pair_memory_bytes(images, captions)
    rec = _Recorder(matcher)
    got = compute_similarity(rec, images, captions, memory_budget_mb=1024, cpu_block_mb=30 * pair / 2**20)
    assert all(n * m <= 30 for n, m in rec.shapes) and len(rec.shapes) > 1
    with torch.no_grad():
        torch.testing.assert_close(got, matcher(images, captions), atol=TOL, rtol=0)


class _DeviceRecorder(_Recorder):
    def forward(self, images, captions):
        self.shapes.append((images.features.device, captions.features.device))
        return self.inner(images, captions)


def test_blocks_run_on_the_device_asked_for():
    """A matcher without parameters (SCAN) runs where ``device`` says, not where the inputs lie."""
    matcher = scan(SCAN_SETTINGS[0])
    images = make_images(5, 6, 16, seed=43)
    captions = make_captions(7, 8, 16, seed=44)
    rec = _DeviceRecorder(matcher)
    got = compute_similarity(rec, images, captions, device="cpu")
    assert rec.shapes and all(a.type == "cpu" and b.type == "cpu" for a, b in rec.shapes)
    torch.testing.assert_close(got, compute_similarity(matcher, images, captions), atol=0, rtol=0)


def test_last_level_cache_size_is_positive():
    from kgitm.core.cpu import last_level_cache_mb

    assert last_level_cache_mb() > 0


def test_plan_blocks():
    assert plan_blocks(100, 1000, 5000, memory_budget_mb=100 * 400 / 2**20) == (20, 20)
    assert plan_blocks(100, 10, 5000, memory_budget_mb=100 * 400 / 2**20) == (10, 40)
    # 1000 x 30 in 400-pair blocks: fewest is 75 blocks (40 x 10); 26 x 15 takes 78 (within 10%) and is squarer
    assert plan_blocks(100, 1000, 30, memory_budget_mb=100 * 400 / 2**20) == (26, 15)
    assert plan_blocks(100, 5000, 5000, memory_budget_mb=100 * 236 / 2**20) == (15, 15)  # not 1 x 236
    assert plan_blocks(10**9, 5, 5, memory_budget_mb=1) == (1, 1)  # at least one pair
    assert plan_blocks(100, 50, 60, image_block=7, caption_block=500) == (7, 60)


def test_pair_memory_estimate_grows_with_the_pair():
    small = (make_images(1, 4, 16), make_captions(1, 4, 16))
    big = (make_images(1, 36, 16), make_captions(1, 16, 16))
    for mt in (scan(SCAN_SETTINGS[0]), gsmn("sparse")):
        assert mt.pair_memory_bytes(*big) > 4 * mt.pair_memory_bytes(*small) > 0


def test_last_level_cache_falls_back_without_sysfs(monkeypatch):
    import kgitm.core.cpu as cpu

    cpu.last_level_cache_mb.cache_clear()
    monkeypatch.setattr(cpu.Path, "glob", lambda self, pattern: iter(()))  # no sysfs: the fallback size
    try:
        assert cpu.last_level_cache_mb() == cpu.FALLBACK_CACHE_MB
    finally:
        cpu.last_level_cache_mb.cache_clear()
