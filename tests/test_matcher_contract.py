"""The matcher contract, checked for every matcher of kgitm.

A new matcher joins by one entry in :data:`CONTRACT` (a factory, the inputs it needs, and a naive
per-pair reference written from the paper's formulas). Every entry must:

- give the same scores block-wise (:func:`kgitm.eval.similarity.compute_similarity`, small blocks,
  padding trimmed) as in one call, and the same as its naive per-pair loop;
- score a pair the same whatever else is in the block (each pair alone equals the whole matrix);
- permute its output when its inputs are permuted;
- never read padding (garbage in padded regions, boxes and words changes nothing);
- stay finite on degenerate inputs (one word, one region, no edges, empty scene graphs, zero
  features), with finite gradients reaching every parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.encoders.pooling import GPO
from kgitm.eval.similarity import compute_similarity
from kgitm.knowledge import NoKnowledge
from kgitm.knowledge.module import KnowledgeModule
from kgitm.matchers.base import Matcher
from kgitm.matchers.fused import KnowledgeFusedMatcher
from kgitm.matchers.global_embedding import GlobalEmbeddingMatcher
from kgitm.matchers.sgm import SGM
from test_matchers import SCAN_SETTINGS, gsmn, make_captions, make_images, naive_gsmn, naive_scan, perturb_padding, scan
from test_sgm import naive_scores as naive_sgm
from test_sgraf import naive_sgraf, sgraf
from test_cora import cora_inputs, cora_matcher, naive_cora

D = 16
TOL = 1e-5


# ---------------------------------------------------------------------------- inputs


def sgm_structure(images: EncodedImages, captions: EncodedCaptions, seed: int) -> tuple[EncodedImages, EncodedCaptions]:
    """Scene-graph index tensors over the valid regions and words only, with empty graphs, objects
    without relations and duplicate objects among them."""
    g = torch.Generator().manual_seed(seed)
    n, m = len(images), len(captions)
    o_v, t_v, o_t, t_t, p = 4, 3, 3, 3, 2

    def pick(mask_row: torch.Tensor, k: int) -> torch.Tensor:
        valid = mask_row.nonzero().flatten()
        return valid[torch.randint(0, len(valid), (k,), generator=g)]

    iex = {
        "obj_region": torch.stack([pick(images.mask[i], o_v) for i in range(n)]),
        "obj_mask": torch.ones(n, o_v, dtype=torch.bool),
        "rel_subj": torch.randint(0, o_v, (n, t_v), generator=g),
        "rel_obj": torch.randint(0, o_v, (n, t_v), generator=g),
        "rel_mask": torch.rand(n, t_v, generator=g) > 0.3,
    }
    iex["obj_mask"][1, 2:] = False
    iex["rel_subj"][1], iex["rel_obj"][1] = iex["rel_subj"][1] % 2, iex["rel_obj"][1] % 2
    if n > 2:
        iex["obj_mask"][2], iex["rel_mask"][2] = False, False  # an empty visual scene graph
    cex = {
        "obj_token": torch.stack([pick(captions.mask[j], o_t) for j in range(m)]),
        "obj_mask": torch.ones(m, o_t, dtype=torch.bool),
        "rel_subj": torch.randint(0, o_t, (m, t_t), generator=g),
        "rel_obj": torch.randint(0, o_t, (m, t_t), generator=g),
        "rel_pred_tokens": torch.stack([pick(captions.mask[j], t_t * p).view(t_t, p) for j in range(m)]),
        "rel_pred_mask": torch.rand(m, t_t, p, generator=g) > 0.3,
        "rel_mask": torch.rand(m, t_t, generator=g) > 0.3,
    }
    cex["obj_mask"][1], cex["rel_mask"][1] = False, False  # an empty textual scene graph
    if m > 2:
        cex["rel_mask"][2] = False  # objects, no relation
    return (EncodedImages(images.features, images.mask, images.boxes, iex),
            EncodedCaptions(captions.features, captions.mask, captions.adjacency, cex))


def plain_inputs(n: int, m: int, *, seed: int, regions: int = 6, words: int = 8, min_regions: int = 2, min_words: int = 1):
    return make_images(n, regions, D, seed=seed, min_regions=min_regions), make_captions(m, words, D, seed=seed + 1, min_words=min_words)


def sgm_inputs(n: int, m: int, *, seed: int, **kw):
    return sgm_structure(*plain_inputs(n, m, seed=seed, **kw), seed)


# ---------------------------------------------------------------------------- naive references


def naive_gpo(gpo: GPO, x: torch.Tensor) -> torch.Tensor:
    """VSE-infinity's GPO on the ``n`` valid features of one item, from the paper's formula: each dimension
    sorted in descending order, weighted by softmax(w . BiGRU(PE(0..n-1)) / tau), directions averaged;
    the encodings written out element by element, the GRU run on this item alone (no packing)."""
    n = x.shape[0]
    pe = torch.tensor([[math.sin(k / 10000 ** (i / gpo.pe_dim)) if i % 2 == 0 else math.cos(k / 10000 ** ((i - 1) / gpo.pe_dim))
                        for i in range(gpo.pe_dim)] for k in range(n)])
    out, _ = gpo.gru(pe.unsqueeze(0))
    h = out[0, :, : gpo.hidden_dim] / 2 + out[0, :, gpo.hidden_dim :] / 2
    theta = torch.softmax(gpo.linear(h).squeeze(-1) / gpo.temperature, 0)
    return (x.sort(0, descending=True).values * theta.unsqueeze(1)).sum(0)


def _naive_pool(how: str, x: torch.Tensor, pool) -> torch.Tensor:
    if how == "mean":
        return x.mean(0)
    if how == "max":
        return x.max(0).values
    if how == "last":
        return x[-1]
    return naive_gpo(pool, x)


def naive_global(matcher: GlobalEmbeddingMatcher, images: EncodedImages, captions: EncodedCaptions) -> torch.Tensor:
    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=0) if matcher.normalize else x

    out = torch.zeros(len(images), len(captions))
    for i in range(len(images)):
        v = pool(_naive_pool(matcher.pooling, images.features[i][images.mask[i]], matcher.image_pool))
        for j in range(len(captions)):
            out[i, j] = v @ pool(_naive_pool(matcher.caption_pooling, captions.features[j][captions.mask[j]], matcher.caption_pool))
    return out


def naive_consensus(k: KnowledgeModule, images: EncodedImages, captions: EncodedCaptions) -> torch.Tensor:
    """CVSE's consensus cosine for one pair at a time (no caption labels in these inputs)."""
    E = k.concept_embeddings()
    out = torch.zeros(len(images), len(captions))
    for i in range(len(images)):
        v = F.normalize(images.features[i][images.mask[i]].mean(0), dim=0)
        cv = F.normalize(torch.softmax(k.scale * v @ E.T, -1) @ E, dim=0)
        for j in range(len(captions)):
            t = F.normalize(captions.features[j][captions.mask[j]].mean(0), dim=0)
            ct = F.normalize(torch.softmax(k.scale * t @ E.T, -1) @ E, dim=0)
            out[i, j] = cv @ ct
    return out


def naive_fused(matcher: KnowledgeFusedMatcher, images, captions) -> torch.Tensor:
    base = matcher.base
    setting = dict(direction=base.direction, lambda_softmax=base.lambda_softmax, aggregation=base.aggregation, lambda_lse=base.lambda_lse)
    w = matcher.knowledge.consensus_weight
    return (1 - w) * naive_scan(images, captions, **setting) + w * naive_consensus(matcher.knowledge, images, captions)


def naive_scan_of(matcher, images, captions):
    return naive_scan(images, captions, direction=matcher.direction, lambda_softmax=matcher.lambda_softmax,
                      aggregation=matcher.aggregation, lambda_lse=matcher.lambda_lse)


# ---------------------------------------------------------------------------- the list


@dataclass
class Case:
    """One matcher under the contract: how to build it, its inputs, and its naive per-pair loop."""

    name: str
    build: Callable[[], Matcher]
    inputs: Callable[..., tuple[EncodedImages, EncodedCaptions]]
    naive: Callable[[Matcher, EncodedImages, EncodedCaptions], torch.Tensor]


def _sgm(**kw) -> SGM:
    torch.manual_seed(0)
    return SGM(D, **kw)


def _gpo() -> GlobalEmbeddingMatcher:
    torch.manual_seed(0)
    return GlobalEmbeddingMatcher("gpo")


def _fused() -> KnowledgeFusedMatcher:
    torch.manual_seed(0)
    k = KnowledgeModule(NoKnowledge(vocabulary=["dog", "man", "car"]), mode="consensus", feature_dim=8, hidden_dim=12)
    k.bind(D)
    return KnowledgeFusedMatcher(scan(SCAN_SETTINGS[0]), k)


CONTRACT: list[Case] = [
    Case("vsepp-mean", lambda: GlobalEmbeddingMatcher("mean"), plain_inputs, naive_global),
    Case("vsepp-max", lambda: GlobalEmbeddingMatcher("max"), plain_inputs, naive_global),
    Case("vsepp-release", lambda: GlobalEmbeddingMatcher("mean", caption_pooling="last"), plain_inputs, naive_global),
    Case("vse0-release", lambda: GlobalEmbeddingMatcher("mean", caption_pooling="last", normalize=False), plain_inputs, naive_global),
    Case("vse-infty-gpo", _gpo, plain_inputs, naive_global),
    *[Case(f"scan-{s['direction']}-{s['aggregation']}", lambda s=s: scan(s), plain_inputs, naive_scan_of) for s in SCAN_SETTINGS],
    Case("gsmn-sparse", lambda: gsmn("sparse"), plain_inputs, naive_gsmn),
    Case("gsmn-dense", lambda: gsmn("dense"), plain_inputs, naive_gsmn),
    Case("gsmn-release-forward", lambda: gsmn("dense", messages="own", text_conv_bias=True, angle_convention="gsmn_release"),
         plain_inputs, naive_gsmn),
    Case("gsmn-sparse-precision", lambda: gsmn("sparse", kernel_style="precision"), plain_inputs, naive_gsmn),
    Case("sgm", lambda: _sgm(num_layers=1), sgm_inputs, naive_sgm),
    Case("sgm-update-objects", lambda: _sgm(num_layers=2, update_objects=True, rho=0.5), sgm_inputs, naive_sgm),
    Case("scan+knowledge-consensus", _fused, plain_inputs, naive_fused),
    Case("sgraf-sgr", lambda: sgraf("SGR"), plain_inputs, naive_sgraf),
    Case("sgraf-sgr-1-step", lambda: sgraf("SGR", sgr_step=1), plain_inputs, naive_sgraf),
    Case("sgraf-saf", lambda: sgraf("SAF"), plain_inputs, naive_sgraf),
    Case("cora", cora_matcher, cora_inputs, naive_cora),
    Case("cora-hidden-2-entity-layers", lambda: cora_matcher(hidden_dim=8, entity_layers=2, relation_layers=1),
         cora_inputs, naive_cora),
]
IDS = [c.name for c in CONTRACT]


def _eval(matcher: Matcher) -> Matcher:
    return matcher.eval()


# ---------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("case", CONTRACT, ids=IDS)
def test_block_wise_equals_whole_equals_naive_loop(case: Case):
    matcher = _eval(case.build())
    images, captions = case.inputs(7, 11, seed=3)
    with torch.no_grad():
        whole = matcher(images, captions)
        naive = case.naive(matcher, images, captions).to(whole.dtype)
        prepared = matcher(matcher.prepare_images(images), matcher.prepare_captions(captions))
    assert whole.shape == (7, 11)
    torch.testing.assert_close(whole, naive, atol=TOL, rtol=0)
    torch.testing.assert_close(prepared, whole, atol=1e-6, rtol=0)
    blocked = compute_similarity(matcher, images, captions, image_block=3, caption_block=4)
    torch.testing.assert_close(blocked, whole, atol=TOL, rtol=0)
    tiny_budget = compute_similarity(matcher, images, captions, memory_budget_mb=1e-3)
    torch.testing.assert_close(tiny_budget, whole, atol=TOL, rtol=0)


@pytest.mark.parametrize("case", CONTRACT, ids=IDS)
def test_a_pair_scores_the_same_whatever_else_is_in_the_block(case: Case):
    matcher = _eval(case.build())
    images, captions = case.inputs(4, 5, seed=5)
    with torch.no_grad():
        whole = matcher(images, captions)
        for i in range(4):
            for j in range(5):
                alone = matcher(images.index(slice(i, i + 1)), captions.index(slice(j, j + 1)))
                torch.testing.assert_close(alone[0, 0], whole[i, j], atol=TOL, rtol=0)


@pytest.mark.parametrize("case", CONTRACT, ids=IDS)
def test_permuted_inputs_permute_the_scores(case: Case):
    matcher = _eval(case.build())
    images, captions = case.inputs(6, 7, seed=9)
    g = torch.Generator().manual_seed(0)
    pi, pc = torch.randperm(6, generator=g), torch.randperm(7, generator=g)
    with torch.no_grad():
        s = matcher(images, captions)
        sp = matcher(images.index(pi), captions.index(pc))
    torch.testing.assert_close(sp, s[pi][:, pc], atol=TOL, rtol=0)


@pytest.mark.parametrize("case", CONTRACT, ids=IDS)
def test_padding_is_never_read(case: Case):
    matcher = _eval(case.build())
    images, captions = case.inputs(4, 5, seed=15, regions=8, words=9, min_regions=1)
    assert (~images.mask).any() and (~captions.mask).any()
    noisy_images, noisy_captions = perturb_padding(images, captions)
    noisy_images = EncodedImages(noisy_images.features, noisy_images.mask, noisy_images.boxes, images.extra)
    noisy_captions = EncodedCaptions(noisy_captions.features, noisy_captions.mask, noisy_captions.adjacency, captions.extra)
    with torch.no_grad():
        torch.testing.assert_close(matcher(noisy_images, noisy_captions), matcher(images, captions), atol=TOL, rtol=0)


@pytest.mark.parametrize("case", CONTRACT, ids=IDS)
def test_degenerate_inputs_give_finite_scores_and_gradients(case: Case):
    matcher = case.build().train()
    images, captions = case.inputs(3, 4, seed=17, min_regions=1)
    captions.mask[0] = False
    captions.mask[0, 0] = True  # a one-word caption
    captions.adjacency[2] = False  # a caption without edges
    images.mask[2] = False
    images.mask[2, 0] = True  # a single valid region
    if images.extra:  # keep the scene graphs on valid positions
        images.extra["obj_region"][2] = 0
        captions.extra["obj_token"][0] = 0
        captions.extra["rel_pred_tokens"][0] = 0
    feats = images.features.clone().requires_grad_(True)
    words = captions.features.clone().requires_grad_(True)
    zero = EncodedImages(torch.zeros_like(feats).requires_grad_(True), images.mask, images.boxes, images.extra)
    s = matcher(EncodedImages(feats, images.mask, images.boxes, images.extra), EncodedCaptions(words, captions.mask, captions.adjacency, captions.extra))
    s_zero = matcher(zero, captions)
    assert torch.isfinite(s).all() and torch.isfinite(s_zero).all()
    hinge = (0.2 + s - s.diagonal()[: min(s.shape)].mean()).clamp_min(0).sum()
    (hinge + s_zero.sum()).backward()
    for t in (feats, words, zero.features):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    for name, p in matcher.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_every_matcher_module_is_under_the_contract():
    """A matcher class that exists in kgitm.matchers but not in CONTRACT fails here."""
    import importlib
    import inspect
    import pkgutil

    import kgitm.matchers

    covered = {type(c.build()).__name__ for c in CONTRACT}
    found = set()
    for info in pkgutil.iter_modules(kgitm.matchers.__path__):
        module = importlib.import_module(f"kgitm.matchers.{info.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Matcher) and obj is not Matcher and obj.__module__ == module.__name__:
                found.add(name)
    assert found <= covered, f"matchers without a CONTRACT entry: {sorted(found - covered)}"
