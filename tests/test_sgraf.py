"""SGRAF (SGR and SAF): a naive per-pair reference from the paper's formulas, the release's key names,
the masked batch norm, and parity with the public-style per-caption loop of the benchmark.

The contract (block-wise = whole = naive loop, block independence, padding, degenerate inputs) is in
``tests/test_matcher_contract.py``, whose SGRAF entries use :func:`sgraf` and :func:`naive_sgraf` here.
The reference follows Diao et al., AAAI 2021 (Eqs. of the local/global similarity representation,
SGR and SAF) with the release's choices the matcher documents (dot-product attention with
LeakyReLU(0.1) normalised over the words, l2-normalised attended vectors); it shares only the learned
layers' weights with the matcher and slices away the padding of each pair.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kgitm.core.types import EncodedCaptions, EncodedImages
from kgitm.eval.similarity import compute_similarity
from kgitm.matchers.sgraf import MaskedBatchNorm1d, SGRAFMatcher
from test_matchers import make_captions, make_images

TOL = 1e-5
D, K = 16, 8


def sgraf(module: str, **kw) -> SGRAFMatcher:
    """A small SGRAF matcher whose batch norms have non-trivial running statistics and affine
    parameters (so the evaluation-mode maps are exercised)."""
    torch.manual_seed(0)
    mt = SGRAFMatcher(module, embed_dim=D, sim_dim=K, **kw)
    with torch.no_grad():
        for m in mt.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return mt


# ---------------------------------------------------------------------------- the naive reference


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.t() + layer.bias


def _bn(bn: nn.BatchNorm1d, x: torch.Tensor, channels: torch.Tensor | slice = slice(None)) -> torch.Tensor:
    """Evaluation-mode batch norm of ``x (C', *)`` whose rows are the channels ``channels``."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    mean, var = bn.running_mean[channels].view(shape), bn.running_var[channels].view(shape)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight[channels].view(shape) + bn.bias[channels].view(shape)


def _image_global(mt: SGRAFMatcher, v: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """``VisualSA`` of one image: ``v (R', D)`` valid regions sitting in region slots ``slots``."""
    sa = mt.v_global_w
    local = torch.tanh(_bn(sa.embedding_local[1], _linear(sa.embedding_local[0], v), slots))
    glob = torch.tanh(_bn(sa.embedding_global[1], _linear(sa.embedding_global[0], v.mean(0))[:, None])[:, 0])
    weights = torch.softmax(_linear(sa.embedding_common[0], local * glob)[:, 0], dim=0)
    return F.normalize((weights[:, None] * v).sum(0), dim=0)


def _caption_global(mt: SGRAFMatcher, e: torch.Tensor) -> torch.Tensor:
    """``TextSA`` of one caption: ``e (L', D)`` valid words."""
    sa = mt.t_global_w
    local = torch.tanh(_linear(sa.embedding_local[0], e))
    glob = torch.tanh(_linear(sa.embedding_global[0], e.mean(0)))
    weights = torch.softmax(_linear(sa.embedding_common[0], local * glob)[:, 0], dim=0)
    return F.normalize((weights[:, None] * e).sum(0), dim=0)


def _pair(mt: SGRAFMatcher, v: torch.Tensor, e: torch.Tensor, v_glo: torch.Tensor, e_glo: torch.Tensor) -> torch.Tensor:
    # local alignments: every word attends over the regions
    c = F.leaky_relu(v @ e.t(), mt.leaky_relu_slope)  # (R', L') region x word
    c = c / c.norm(dim=1, keepdim=True).clamp_min(1e-8)  # normalised over the words
    alpha = torch.softmax(mt.lambda_softmax * c, dim=0)  # over the regions, per word
    locals_ = []
    for j in range(e.shape[0]):
        a_j = F.normalize((alpha[:, j : j + 1] * v).sum(0), dim=0)
        locals_.append(F.normalize(_linear(mt.sim_tranloc_w, (a_j - e[j]) ** 2), dim=0))
    glo = F.normalize(_linear(mt.sim_tranglo_w, (v_glo - e_glo) ** 2), dim=0)
    s = torch.stack([glo, *locals_])  # (1 + L', K): node 0 is the global alignment
    if mt.module == "SGR":
        for step in mt.SGR_module:
            edges = torch.softmax(_linear(step.graph_query_w, s) @ _linear(step.graph_key_w, s).t(), dim=1)
            s = torch.relu(_linear(step.sim_graph_w, edges @ s))
        vec = s[0]
    else:
        saf = mt.SAF_module
        gate = torch.sigmoid(_bn(saf.bn, _linear(saf.attn_sim_w, s).t())[0])  # (1 + L',)
        gate = gate / gate.sum()
        vec = F.normalize((gate[:, None] * s).sum(0), dim=0)
    return torch.sigmoid(_linear(mt.sim_eval_w, vec))[0]


def naive_sgraf(mt: SGRAFMatcher, images: EncodedImages, captions: EncodedCaptions) -> torch.Tensor:
    """One (image, caption) pair at a time, valid regions and words only (evaluation mode)."""
    out = torch.zeros(len(images), len(captions))
    for i in range(len(images)):
        slots = images.mask[i].nonzero().flatten()
        v = images.features[i, slots]
        v_glo = _image_global(mt, v, slots)
        for j in range(len(captions)):
            e = captions.features[j][captions.mask[j]]
            out[i, j] = _pair(mt, v, e, v_glo, _caption_global(mt, e))
    return out


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("module", ["SGR", "SAF"])
def test_keys_and_shapes_are_the_releases(module: str):
    """``sim_enc`` of the release at its defaults (1024-d, sim_dim 256, 36 regions, 3 SGR steps),
    ``../shared/docs/release-checkpoints.md``: the same keys and shapes under ``matcher.``."""
    mt = SGRAFMatcher(module, embed_dim=1024)
    shapes = {k: tuple(v.shape) for k, v in mt.state_dict().items()}
    bn = lambda c: {"weight": (c,), "bias": (c,), "running_mean": (c,), "running_var": (c,), "num_batches_tracked": ()}  # noqa: E731
    lin = lambda o, i: {"weight": (o, i), "bias": (o,)}  # noqa: E731
    want = {}
    for prefix, parts in {
        "v_global_w.embedding_local.0": lin(1024, 1024), "v_global_w.embedding_local.1": bn(36),
        "v_global_w.embedding_global.0": lin(1024, 1024), "v_global_w.embedding_global.1": bn(1024),
        "v_global_w.embedding_common.0": lin(1, 1024),
        "t_global_w.embedding_local.0": lin(1024, 1024), "t_global_w.embedding_global.0": lin(1024, 1024),
        "t_global_w.embedding_common.0": lin(1, 1024),
        "sim_tranloc_w": lin(256, 1024), "sim_tranglo_w": lin(256, 1024), "sim_eval_w": lin(1, 256),
        **({f"SGR_module.{i}.{n}": lin(256, 256) for i in range(3) for n in ("graph_query_w", "graph_key_w", "sim_graph_w")}
           if module == "SGR" else {"SAF_module.attn_sim_w": lin(1, 256), "SAF_module.bn": bn(1)}),
    }.items():
        want.update({f"{prefix}.{k}": v for k, v in parts.items()})
    assert shapes == want


def test_release_initialisation():
    """Xavier-uniform weights within ``sqrt(6 / (fan_in + fan_out))``, zero biases, identity norms."""
    mt = SGRAFMatcher("SAF", embed_dim=64, sim_dim=32)
    for name, m in mt.named_modules():
        if isinstance(m, nn.Linear):
            bound = (6.0 / (m.in_features + m.out_features)) ** 0.5
            assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.5 * bound, name
            assert (m.bias == 0).all(), name
        elif isinstance(m, nn.BatchNorm1d):
            assert (m.weight == 1).all() and (m.bias == 0).all() and (m.running_var == 1).all(), name


def test_the_paper_defaults():
    mt = SGRAFMatcher()
    assert (mt.module, mt.sim_dim, mt.sgr_step, mt.lambda_softmax, mt.num_regions, mt.dropout) == ("SGR", 256, 3, 9.0, 36, 0.4)
    with pytest.raises(ValueError, match="module must be"):
        SGRAFMatcher("AVE")
    with pytest.raises(RuntimeError, match="bind"):
        mt(make_images(1, 4, 8), make_captions(1, 3, 8))


def test_sgr_steps_have_their_own_weights_and_all_of_them_matter():
    mt = sgraf("SGR", sgr_step=2).eval()
    images, captions = make_images(3, 6, D, seed=1), make_captions(4, 7, D, seed=2)
    assert mt.SGR_module[0].graph_query_w.weight.data_ptr() != mt.SGR_module[1].graph_query_w.weight.data_ptr()
    with torch.no_grad():
        before = mt(images, captions)
        mt.SGR_module[0].graph_key_w.weight.mul_(3.0)  # edges of the first step (not only node 0's)
        after = mt(images, captions)
    assert (before - after).abs().max() > 1e-4


@pytest.mark.parametrize("module", ["SGR", "SAF"])
def test_every_parameter_takes_part_in_training(module: str):
    """Every parameter gets a gradient (distributed data parallel refuses unused ones); SGR's key bias,
    which the softmax over keys cancels, gets a zero one, as in the release."""
    mt = sgraf(module).train()
    s = mt(make_images(4, 6, D, seed=3), make_captions(5, 7, D, seed=4))
    (0.2 + s - s.diagonal().mean()).clamp_min(0).sum().backward()
    missing = [name for name, p in mt.named_parameters() if p.grad is None]
    assert not missing, missing
    if module == "SGR":
        assert mt.SGR_module[0].graph_key_w.bias.grad.abs().max() < 1e-6


def test_masked_batch_norm_is_batch_norm_on_the_valid_values():
    torch.manual_seed(0)
    x = torch.randn(5, 3, 7)
    mask = torch.rand(5, 3, 1) > 0.3
    mask[0] = True
    ours, ref = MaskedBatchNorm1d(3, momentum=0.3), nn.BatchNorm1d(3, momentum=0.3)
    # no mask: torch's BatchNorm1d exactly (output and running statistics)
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    # with a mask: each channel as BatchNorm over its valid values only; garbage elsewhere is not read
    fresh = MaskedBatchNorm1d(3, momentum=0.3)
    noisy = x.masked_fill(~mask, 1e6)
    out = fresh(noisy, mask)
    for c in range(3):
        keep = mask[:, c, 0]
        one = nn.BatchNorm1d(1, momentum=0.3)
        want = one(x[keep][:, c : c + 1])  # (n_c, 1, 7)
        torch.testing.assert_close(out[keep][:, c : c + 1], want)
        torch.testing.assert_close(fresh.running_mean[c : c + 1], one.running_mean)
        torch.testing.assert_close(fresh.running_var[c : c + 1], one.running_var)
    # evaluation: the running statistics' affine map, on any prefix of the channels
    fresh.eval()
    torch.testing.assert_close(fresh(x[:, :2]), _bn(fresh, x[:, :2].transpose(0, 1), slice(0, 2)).transpose(0, 1))
    with pytest.raises(ValueError, match="num_regions"):
        fresh(torch.randn(2, 4, 3))


def test_training_mode_norm_statistics_skip_padding():
    """In training the region-slot and SAF norms see the valid regions and nodes only: garbage in the
    padding changes neither the scores of the batch nor the running statistics."""
    images, captions = make_images(4, 8, D, seed=11, min_regions=1), make_captions(5, 9, D, seed=12)
    from test_matchers import perturb_padding

    noisy_images, noisy_captions = perturb_padding(images, captions)
    for module in ("SGR", "SAF"):
        a, b = sgraf(module, dropout=0.0).train(), sgraf(module, dropout=0.0).train()
        torch.testing.assert_close(a(images, captions), b(noisy_images, noisy_captions), atol=TOL, rtol=0)
        for (name, x), (_, y) in zip(a.named_buffers(), b.named_buffers()):
            torch.testing.assert_close(x, y, atol=TOL, rtol=0, msg=name)


def test_trimmed_blocks_use_the_first_region_slots():
    """A block whose trailing padded region slots were cut scores as the untrimmed block."""
    mt = sgraf("SAF").eval()
    images, captions = make_images(9, 10, D, seed=31), make_captions(23, 12, D, seed=32)
    trimmed = compute_similarity(mt, images, captions, image_block=3, caption_block=5)
    plain = compute_similarity(mt, images, captions, image_block=3, caption_block=5, trim_padding=False)
    torch.testing.assert_close(trimmed, plain, atol=TOL, rtol=0)


def test_pair_memory_estimate_grows_with_the_pair():
    mt = sgraf("SGR")
    small = (make_images(1, 4, D), make_captions(1, 4, D))
    big = (make_images(1, 36, D), make_captions(1, 16, D))
    assert mt.pair_memory_bytes(*big) > 3 * mt.pair_memory_bytes(*small) > 0


@pytest.mark.parametrize("module", ["SGR", "SAF"])
def test_public_style_loop_gives_the_same_scores(module: str):
    """``scripts/public_style.py``'s per-caption loop (the benchmark's baseline) = the vectorised matcher."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from public_style import loop_sgraf

    mt = sgraf(module).eval()
    images = make_images(7, 6, D, seed=41)
    images = EncodedImages(images.features, torch.ones_like(images.mask), images.boxes)  # the release: every region valid
    captions = make_captions(9, 8, D, seed=42)
    with torch.no_grad():
        want = mt(images, captions)
        got = loop_sgraf(mt, images, captions, range(2, 9), shard=3)
    torch.testing.assert_close(got, want[:, 2:], atol=TOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["saf", "sgr"])
def test_one_epoch_fit_and_test_through_the_cli(module: str, tiny_synthscenes, tmp_path, monkeypatch):
    """``kgitm fit`` for one epoch with the SynthScenes recipe (64-d, batch 32), then ``kgitm test`` on its
    best checkpoint: the batch norms' running statistics were trained and the test metrics are finite."""
    import json

    from kgitm.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    trainer = tmp_path / "trainer.yaml"
    trainer.write_text(
        f"accelerator: cpu\ndevices: 1\ngradient_clip_val: 2.0\nlogger: false\nenable_progress_bar: false\nmax_epochs: 1\n"
        f"default_root_dir: {out}\ncallbacks:\n  - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"    init_args: {{dirpath: {out}/ckpt, filename: best, monitor: val/rsum, mode: max, save_last: true}}\n"
    )
    repo = Path(__file__).resolve().parents[1]
    common = ["--config", str(repo / f"configs/experiment/sgraf_{module}_synthscenes.yaml"), "--trainer", str(trainer),
              "--data.root", str(tiny_synthscenes), "--data.batch_size", "32", "--seed_everything", "0",
              "--model.embed_dim", "64", "--model.text_encoder.init_args.word_dim", "32", "--model.matcher.init_args.sim_dim", "32"]
    main(["fit", *common])
    state = torch.load(out / "ckpt" / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert state["model.matcher.v_global_w.embedding_local.1.num_batches_tracked"] > 0
    assert not torch.equal(state["model.matcher.v_global_w.embedding_global.1.running_var"], torch.ones(64))
    main(["test", *common, "--ckpt_path", str(out / "ckpt" / "best.ckpt")])
    results = json.loads(next(out.rglob("test_results.json")).read_text())["results"]
    for key in ("rsum", "i2t_r1", "t2i_r1"):
        assert key in results and results[key] == results[key]  # present and not NaN
