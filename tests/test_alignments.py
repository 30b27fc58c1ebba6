"""``Matcher.alignments``: for every matcher of the contract, one pair's named tensors come from the
code path of ``forward``: the score equals ``forward``'s, and the attention equals what the shared
attention function returned inside ``forward`` (recorded by a hook on it, not recomputed)."""

from __future__ import annotations

import pytest
import torch

import kgitm.matchers.gsmn as gsmn_module
import kgitm.matchers.scan as scan_module
import kgitm.matchers.sgm as sgm_module
import kgitm.matchers.sgraf as sgraf_module
from test_matcher_contract import CONTRACT, IDS


def _pair(case, seed: int = 4):
    images, captions = case.inputs(3, 3, seed=seed)
    return images.index(slice(1, 2)), captions.index(slice(2, 3))


class _Recorder:
    """Wraps a module-level function and keeps a copy of every value it returns."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        self.calls.append((args, kwargs, out.detach().clone() if torch.is_tensor(out) else out))
        return out


@pytest.mark.parametrize("case", CONTRACT, ids=IDS)
def test_the_score_of_the_alignments_is_the_score_of_forward(case):
    matcher = case.build().eval()
    images, captions = _pair(case)
    with torch.no_grad():
        out = matcher.alignments(images, captions)
        forward = matcher(images, captions)
    assert out["score"].shape == ()
    torch.testing.assert_close(out["score"], forward[0, 0], atol=1e-6, rtol=0)
    assert all(torch.is_tensor(v) for v in out.values())
    with pytest.raises(ValueError, match="explains one pair"):
        block_images, block_captions = case.inputs(3, 3, seed=0)
        matcher.alignments(block_images, block_captions.index(slice(0, 1)))


@pytest.mark.parametrize("case", [c for c in CONTRACT if c.name.startswith(("scan", "gsmn", "sgraf"))], ids=lambda c: c.name)
def test_attention_is_the_one_forward_computed(case, monkeypatch):
    matcher = case.build().eval()
    base = getattr(matcher, "base", matcher)
    images, captions = _pair(case)
    module = {"GSMNMatcher": gsmn_module, "SGRAFMatcher": sgraf_module}.get(type(base).__name__, scan_module)
    rec = _Recorder(module.cross_attention)
    monkeypatch.setattr(module, "cross_attention", rec)
    with torch.no_grad():
        matcher(images, captions)  # forward, hooked
        hooked = [c[2] for c in rec.calls]
        out = matcher.alignments(images, captions)
    l, r = int(captions.mask[0].sum()), int(images.mask[0].sum())
    if module is not gsmn_module:
        (att,) = hooked  # (P, C, S, Q): one context owner, one query owner (SGRAF: its t2i layout)
        key = "region_word_attention" if getattr(base, "direction", "t2i") == "i2t" else "word_region_attention"
        torch.testing.assert_close(out[key], att[0, :, 0, :].t(), atol=0, rtol=0)
        rows = out[key][: (r if key == "region_word_attention" else l)]
    else:
        att_t2i, att_i2t = hooked  # (N, M, L, R) and (M, L, N, R), the layouts of GSMN's forward
        torch.testing.assert_close(out["word_region_attention"], att_t2i[0, 0], atol=0, rtol=0)
        torch.testing.assert_close(out["region_word_attention"], att_i2t[0, :, 0, :].t(), atol=0, rtol=0)
        rows = out["word_region_attention"][:l]
        for key, n in (("word_score", l), ("region_score", r)):
            assert out[key].shape[0] >= n
        torch.testing.assert_close(out["t2i_score"] + out["i2t_score"], out["score"], atol=1e-6, rtol=0)
        torch.testing.assert_close(out["word_score"][:l].mean(), out["t2i_score"], atol=1e-6, rtol=0)
        torch.testing.assert_close(out["region_score"][images.mask[0]].mean(), out["i2t_score"], atol=1e-6, rtol=0)
    # each valid query's weights sum to one over the context items
    assert rows.shape[0] > 0
    torch.testing.assert_close(rows.sum(-1), torch.ones(rows.shape[0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", [c for c in CONTRACT if c.name.startswith("sgm")], ids=lambda c: c.name)
def test_sgm_correspondences_are_the_ones_forward_matched(case, monkeypatch):
    matcher = case.build().eval()
    images, captions = _pair(case, seed=7)
    rec = _Recorder(sgm_module._best_match_mean)
    monkeypatch.setattr(sgm_module, "_best_match_mean", rec)
    with torch.no_grad():
        matcher(images, captions)
        (obj_args, _, obj_score), (rel_args, _, rel_score) = rec.calls
        out = matcher.alignments(images, captions)
    torch.testing.assert_close(out["object_score"], obj_score[0, 0], atol=0, rtol=0)
    torch.testing.assert_close(out["relation_score"], rel_score[0, 0], atol=0, rtol=0)
    for level, args in (("object", obj_args), ("relation", rel_args)):
        t_mask, v_mask = out[f"caption_{level}_mask"], out[f"image_{level}_mask"]
        torch.testing.assert_close(t_mask, args[3][0])
        torch.testing.assert_close(v_mask, args[1][0])
        sim, match = out[f"{level}_similarity"], out[f"{level}_match"]
        if v_mask.any() and t_mask.any():
            best = sim.masked_fill(~v_mask, float("-inf")).amax(-1)
            torch.testing.assert_close(sim.gather(1, match[:, None])[:, 0][t_mask], best[t_mask])
            assert v_mask[match[t_mask]].all()  # matched to real visual nodes only
            torch.testing.assert_close(best[t_mask].mean(), out[f"{level}_score"], atol=1e-6, rtol=0)
