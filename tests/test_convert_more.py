"""``kgitm convert-checkpoint`` for SGRAF (SAF, SGR), VSE-infinity (bigru) and VSRN.

As in ``test_convert.py``: checkpoints in the releases' layout (``{'epoch', 'model', 'best_rsum', 'opt',
'Eiters'}``, a real ``argparse.Namespace``, random weights of the keys and shapes of
``../shared/docs/release-checkpoints.md``), converted, and kgitm's similarity matrix compared with a naive
re-implementation of the release's forward written below from its code (SGRAF ``model.py`` branch
``python3.6``: ``EncoderSimilarity``'s per-caption loop, ``VisualSA``/``TextSA``, ``SCAN_attention``,
``GraphReasoning``, ``AttentionFiltration``; vse_infty ``bigru`` ``lib/encoders.py``, ``mlp.py``,
``aggr/gpo.py``; VSRN ``model.py`` ``EncoderImagePrecompAttn`` and ``GCN_lib/Rs_GCN.py``), in float64,
batch norms as in evaluation (running statistics).
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_convert import (
    CAPTIONS, D_IN_SCAN, EMBED, IMAGES, REGIONS, TOL, WORD, convert, kgitm_sims, official_l2norm, release_ids, release_words,
    save_release, write_json_vocab, write_pickle_vocab, write_precomp,
)

from kgitm.cli import main
from kgitm.convert import convert_release, load_release_checkpoint, read_release_vocabulary
from kgitm.convert.release import ReleaseFormatError

SIM, STEPS = 6, 3  # SGRAF's sim_dim and sgr_step at test size
PE, GPO_H = 4, 3   # VSE-infinity's GPO(d_pe, d_hidden) at test size
BN_EPS = 1e-5


# ---------------------------------------------------------------------------- naive pieces


def gru_steps(x: torch.Tensor, s: dict, prefix: str, key: str) -> torch.Tensor:
    """torch.nn.GRU's equations, one direction of one layer, step by step: ``x (L, F) -> (L, H)``."""
    w_ih, w_hh, b_ih, b_hh = (s[f"{prefix}{k}_{key}"].double() for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    hid = w_hh.shape[1]
    h = torch.zeros(hid, dtype=torch.float64)
    out = []
    for t in range(x.shape[0]):
        gi, gh = w_ih @ x[t] + b_ih, w_hh @ h + b_hh
        r = torch.sigmoid(gi[:hid] + gh[:hid])
        z = torch.sigmoid(gi[hid:2 * hid] + gh[hid:2 * hid])
        n = torch.tanh(gi[2 * hid:] + r * gh[2 * hid:])
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out)


def bi_gru_mean(x: torch.Tensor, s: dict, prefix: str) -> torch.Tensor:
    """One bi-directional layer, directions averaged (``(out[..., :H] + out[..., H:]) / 2``)."""
    return (gru_steps(x, s, prefix, "l0") + gru_steps(x.flip(0), s, prefix, "l0_reverse").flip(0)) / 2


def linear(s: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return x @ s[f"{name}.weight"].double().t() + s[f"{name}.bias"].double()


def batch_norm_eval(s: dict, name: str, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    p = {k: s[f"{name}.{k}"].double().view(shape) for k in ("running_mean", "running_var", "weight", "bias")}
    return (x - p["running_mean"]) / torch.sqrt(p["running_var"] + BN_EPS) * p["weight"] + p["bias"]


def rand_linear(gen, out: int, inp: int, *, bias: bool = True, scale: float = 0.4) -> dict[str, torch.Tensor]:
    d = {"weight": torch.randn(out, inp, generator=gen) * scale}
    if bias:
        d["bias"] = torch.randn(out, generator=gen) * 0.1
    return d


def rand_bn(gen, n: int) -> dict[str, torch.Tensor]:
    return {"weight": 1 + 0.2 * torch.randn(n, generator=gen), "bias": 0.1 * torch.randn(n, generator=gen),
            "running_mean": 0.2 * torch.randn(n, generator=gen), "running_var": 0.5 + torch.rand(n, generator=gen),
            "num_batches_tracked": torch.tensor(1000)}


def rand_gru(gen, prefix: str, inp: int, hid: int, *, bidirectional: bool, scale: float = 0.4) -> dict[str, torch.Tensor]:
    out = {}
    for sfx in ("", "_reverse") if bidirectional else ("",):
        out[f"{prefix}weight_ih_l0{sfx}"] = torch.randn(3 * hid, inp, generator=gen) * scale
        out[f"{prefix}weight_hh_l0{sfx}"] = torch.randn(3 * hid, hid, generator=gen) * scale
        out[f"{prefix}bias_ih_l0{sfx}"] = torch.randn(3 * hid, generator=gen) * 0.1
        out[f"{prefix}bias_hh_l0{sfx}"] = torch.randn(3 * hid, generator=gen) * 0.1
    return out


def under(prefix: str, d: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in d.items()}


# ---------------------------------------------------------------------------- SGRAF


def sgraf_options(vocab_size: int, **over) -> argparse.Namespace:
    """SGRAF opts.py's parser (python3.6 branch) at test sizes; bi_gru, max_violation store_false (on)."""
    opt = dict(
        data_path="/apdcephfs/share/data", data_name="f30k_precomp", vocab_path="/apdcephfs/share/vocab/",
        model_name="./runs/f30k_SGR/checkpoint", logger_name="./runs/f30k_SGR/log", batch_size=128, num_epochs=40, lr_update=30,
        learning_rate=0.0002, workers=10, log_step=10, val_step=1000, grad_clip=2.0, margin=0.2, max_violation=True, img_dim=D_IN_SCAN,
        word_dim=WORD, embed_size=EMBED, sim_dim=SIM, num_layers=1, bi_gru=True, no_imgnorm=False, no_txtnorm=False,
        module_name="SGR", sgr_step=STEPS, vocab_size=vocab_size,
    )
    opt.update(over)
    return argparse.Namespace(**opt)


def sgraf_modules(vocab_size: int, module: str, *, seed: int = 0, steps: int = STEPS):
    gen = torch.Generator().manual_seed(seed)
    img = under("fc", rand_linear(gen, EMBED, D_IN_SCAN, scale=0.3))
    txt = {"embed.weight": torch.randn(vocab_size, WORD, generator=gen), **rand_gru(gen, "cap_rnn.", WORD, EMBED, bidirectional=True)}
    sim = {
        **under("v_global_w.embedding_local.0", rand_linear(gen, EMBED, EMBED)), **under("v_global_w.embedding_local.1", rand_bn(gen, REGIONS)),
        **under("v_global_w.embedding_global.0", rand_linear(gen, EMBED, EMBED)), **under("v_global_w.embedding_global.1", rand_bn(gen, EMBED)),
        **under("v_global_w.embedding_common.0", rand_linear(gen, 1, EMBED)),
        **under("t_global_w.embedding_local.0", rand_linear(gen, EMBED, EMBED)),
        **under("t_global_w.embedding_global.0", rand_linear(gen, EMBED, EMBED)),
        **under("t_global_w.embedding_common.0", rand_linear(gen, 1, EMBED)),
        **under("sim_tranloc_w", rand_linear(gen, SIM, EMBED)), **under("sim_tranglo_w", rand_linear(gen, SIM, EMBED)),
        **under("sim_eval_w", rand_linear(gen, 1, SIM, scale=1.0)),
    }
    if module == "SGR":
        for i in range(steps):
            for name in ("graph_query_w", "graph_key_w", "sim_graph_w"):
                sim.update(under(f"SGR_module.{i}.{name}", rand_linear(gen, SIM, SIM, scale=0.5)))
    else:
        sim.update(under("SAF_module.attn_sim_w", rand_linear(gen, 1, SIM, scale=1.0)))
        sim.update(under("SAF_module.bn", rand_bn(gen, 1)))
    return [img, txt, sim]


def _self_attention(s: dict, name: str, local: torch.Tensor, *, norms: bool) -> torch.Tensor:
    """VisualSA / TextSA.forward (eval: dropout off) for one item: ``local (P, D) -> (D,)``."""
    raw_global = local.mean(0)
    l_emb = linear(s, f"{name}.embedding_local.0", local)
    g_emb = linear(s, f"{name}.embedding_global.0", raw_global)
    if norms:  # BatchNorm1d(36) on (B, 36, D): channel axis 1, the regions; BatchNorm1d(D) on (B, D)
        l_emb = batch_norm_eval(s, f"{name}.embedding_local.1", l_emb.unsqueeze(0), 1)[0]
        g_emb = batch_norm_eval(s, f"{name}.embedding_global.1", g_emb.unsqueeze(0), 1)[0]
    weights = torch.softmax(linear(s, f"{name}.embedding_common.0", torch.tanh(l_emb) * torch.tanh(g_emb)).squeeze(-1), 0)
    return official_l2norm((weights.unsqueeze(1) * local).sum(0))


def official_sgraf_sims(modules, opt, words, images: np.ndarray, captions: list[str]) -> np.ndarray:
    img, txt, sim = modules
    regions = linear(img, "fc", torch.from_numpy(images).double())
    if not opt.no_imgnorm:
        regions = official_l2norm(regions)
    img_glo = torch.stack([_self_attention(sim, "v_global_w", r, norms=True) for r in regions])
    sims = np.zeros((len(images), len(captions)))
    for j, caption in enumerate(captions):  # EncoderSimilarity.forward: one caption at a time
        cap = bi_gru_mean(txt["embed.weight"].double()[release_ids(words, caption)], txt, "cap_rnn.")
        if not opt.no_txtnorm:
            cap = official_l2norm(cap)
        cap_glo = _self_attention(sim, "t_global_w", cap, norms=False)
        for i in range(len(images)):
            attn = F.leaky_relu(regions[i] @ cap.t(), 0.1)  # (R, L)
            attn = official_l2norm(attn, 1)  # l2norm(attn, 2) of (B, R, L): over the words
            attn = torch.softmax(attn.t() * 9.0, dim=1)  # (L, R), smooth = 9
            context = official_l2norm(attn @ regions[i])
            sim_loc = official_l2norm(linear(sim, "sim_tranloc_w", (context - cap).pow(2)))
            sim_glo = official_l2norm(linear(sim, "sim_tranglo_w", (img_glo[i] - cap_glo).pow(2)))
            nodes = torch.cat([sim_glo.unsqueeze(0), sim_loc], 0)
            if opt.module_name == "SGR":
                for k in range(opt.sgr_step):
                    q = linear(sim, f"SGR_module.{k}.graph_query_w", nodes)
                    key = linear(sim, f"SGR_module.{k}.graph_key_w", nodes)
                    edges = torch.softmax(q @ key.t(), -1)
                    nodes = F.relu(linear(sim, f"SGR_module.{k}.sim_graph_w", edges @ nodes))
                vec = nodes[0]
            else:
                gate = linear(sim, "SAF_module.attn_sim_w", nodes).t()  # (1, V)
                gate = torch.sigmoid(batch_norm_eval(sim, "SAF_module.bn", gate.unsqueeze(0), 1)[0])
                gate = gate / (gate.abs().sum(-1, keepdim=True) + 1e-8)  # l1norm
                vec = official_l2norm((gate @ nodes).squeeze(0))
            sims[i, j] = float(torch.sigmoid(linear(sim, "sim_eval_w", vec)))
    return sims


@pytest.mark.parametrize("over", [dict(module_name="SAF"), dict(module_name="SGR"), dict(module_name="SGR", sgr_step=1, no_txtnorm=True)],
                         ids=["saf", "sgr", "sgr-one-step-no_txtnorm"])
def test_sgraf_conversion_equals_the_release_forward(tmp_path, over):
    words = release_words()
    opt = sgraf_options(len(words), **over)
    modules = sgraf_modules(len(words), opt.module_name, steps=opt.sgr_step)
    data = write_precomp(tmp_path / "f30k_precomp", one_vector=False)
    conv, out = convert(tmp_path, "sgraf", modules, opt, write_json_vocab(tmp_path / "f30k_precomp_vocab.json", words))
    assert conv.model["matcher"]["init_args"]["module"] == opt.module_name and conv.model["matcher"]["init_args"]["num_regions"] == REGIONS
    ours = kgitm_sims(out, data, conv)
    theirs = official_sgraf_sims(modules, opt, words, np.load(data / "test_ims.npy"), CAPTIONS)
    assert ours.shape == (IMAGES, len(CAPTIONS))
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


# ---------------------------------------------------------------------------- VSE-infinity


def vse_infty_options(vocab_size: int, **over) -> argparse.Namespace:
    if "vocab_size_" in over:
        vocab_size = over.pop("vocab_size_")
    """vse_infty bigru arguments.py at test sizes, with train_region.sh's flags; vocab_size counts <mask>."""
    opt = dict(
        data_path="/tmp/data/f30k", data_name="f30k_precomp", vocab_path="/tmp/data/vocab", margin=0.2, num_epochs=25,
        batch_size=128, word_dim=WORD, embed_size=EMBED, num_layers=1, grad_clip=2.0, learning_rate=0.0005, lr_update=15,
        optim="adam", workers=10, log_step=200, val_step=500, logger_name="runs/f30k_butd_region_bigru/log",
        model_name="runs/f30k_butd_region_bigru", resume="", max_violation=True, img_dim=D_IN_SCAN, no_imgnorm=False,
        no_txtnorm=False, precomp_enc_type="basic", backbone_path="", backbone_source="detector", vse_mean_warmup_epochs=1,
        reset_start_epoch=False, backbone_warmup_epochs=5, embedding_warmup_epochs=2, backbone_lr_factor=0.01,
        input_scale_factor=1.0, drop=True, vocab_size=vocab_size,
    )
    opt.update(over)
    return argparse.Namespace(**opt)


def vse_infty_modules(vocab_size: int, *, seed: int = 0, data_parallel: bool = False):
    gen = torch.Generator().manual_seed(seed)
    hidden = EMBED // 2
    gpool = lambda: {**rand_gru(gen, "gpool.gru.", PE, GPO_H, bidirectional=True, scale=0.8), "gpool.linear.weight": torch.randn(1, GPO_H, generator=gen)}
    img = {
        **under("fc", rand_linear(gen, EMBED, D_IN_SCAN, scale=0.3)),
        **under("mlp.layers.0", rand_linear(gen, hidden, D_IN_SCAN, scale=0.3)), **under("mlp.layers.1", rand_linear(gen, EMBED, hidden)),
        **under("mlp.bns.0", rand_bn(gen, hidden)), **under("mlp.bns.1", rand_bn(gen, EMBED)),  # bns.1: created, never applied
        **gpool(),
    }
    txt = {"embed.weight": torch.randn(vocab_size + 1, WORD, generator=gen), **rand_gru(gen, "rnn.", WORD, EMBED, bidirectional=True), **gpool()}
    if data_parallel:
        return [{f"module.{k}": v for k, v in m.items()} for m in (img, txt)]
    return [img, txt]


def positional_encoding(d: int, n: int) -> torch.Tensor:
    pe = torch.zeros(n, d, dtype=torch.float64)
    position = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * -(math.log(10000.0) / d))
    pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
    return pe


def gpo(s: dict, features: torch.Tensor) -> torch.Tensor:
    """GPO.forward for one item of ``n`` features ``(n, D)``: rank weights from the bi-GRU over the
    positional encodings, softmax(scores / 0.1), dot with the features sorted per dimension."""
    out = bi_gru_mean(positional_encoding(PE, features.shape[0]), s, "gpool.gru.")
    weights = torch.softmax((out @ s["gpool.linear.weight"].double().t()).squeeze(-1) / 0.1, 0)
    return (features.sort(dim=0, descending=True).values * weights.unsqueeze(1)).sum(0)


def official_vse_infty_sims(modules, opt, words, images: np.ndarray, captions: list[str]) -> np.ndarray:
    img, txt = modules
    x = torch.from_numpy(images).double()
    hidden = F.relu(batch_norm_eval(img, "mlp.bns.0", linear(img, "mlp.layers.0", x), -1))
    feats = linear(img, "fc", x) + linear(img, "mlp.layers.1", hidden)  # mlp(images) + fc(images)
    ims = torch.stack([official_l2norm(gpo(img, f)) for f in feats])
    caps = []
    for caption in captions:
        cap = bi_gru_mean(txt["embed.weight"].double()[release_ids(words, caption)], txt, "rnn.")
        caps.append(official_l2norm(gpo(txt, cap)))
    return (ims @ torch.stack(caps).t()).numpy()


@pytest.mark.parametrize("data_parallel", [False, True], ids=["plain", "module-prefix"])
def test_vse_infty_conversion_equals_the_release_forward(tmp_path, data_parallel):
    words = release_words()
    opt = vse_infty_options(len(words) + 1)
    modules = vse_infty_modules(len(words), data_parallel=data_parallel)
    data = write_precomp(tmp_path / "f30k_precomp", one_vector=False)
    conv, out = convert(tmp_path, "vse_infty", modules, opt, write_json_vocab(tmp_path / "f30k_precomp_vocab.json", words))
    itos = (out / "vocab.txt").read_text().splitlines()
    assert itos[-1] == "<mask>" and len(itos) == len(words) + 1
    plain = vse_infty_modules(len(words))
    np.testing.assert_allclose(kgitm_sims(out, data, conv), official_vse_infty_sims(plain, opt, words, np.load(data / "test_ims.npy"), CAPTIONS),
                               atol=TOL, rtol=0)


def _error(tmp_path, release, modules, opt, vocab_words, *, pickle_vocab=None) -> str:
    ckpt = save_release(tmp_path / "bad.pth.tar", modules, opt)
    vocab = pickle_vocab or write_json_vocab(tmp_path / "vocab.json", vocab_words)
    with pytest.raises(ReleaseFormatError) as err:
        convert_release(release, load_release_checkpoint(ckpt), read_release_vocabulary(vocab))
    return str(err.value)


def test_vse_infty_bert_and_backbone_models_are_refused_in_one_line(tmp_path, capsys):
    words = release_words()
    img, txt = vse_infty_modules(len(words))
    bert_txt = {"bert.embeddings.word_embeddings.weight": torch.zeros(30, 4), "linear.weight": torch.zeros(EMBED, 4),
                "linear.bias": torch.zeros(EMBED), **{k: v for k, v in txt.items() if k.startswith("gpool.")}}
    ckpt = save_release(tmp_path / "model_best.pth", [img, bert_txt], vse_infty_options(len(words) + 1))
    vocab = write_json_vocab(tmp_path / "vocab.json", words)
    with pytest.raises(SystemExit) as code:
        main(["convert-checkpoint", "vse_infty", str(ckpt), "--vocab", str(vocab), "--out", str(tmp_path / "out")])
    assert code.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "txt_enc.bert.embeddings.word_embeddings.weight" in err and "bigru" in err
    assert not (tmp_path / "out").exists()
    msg = _error(tmp_path, "vse_infty", [img, txt], vse_infty_options(len(words) + 1, precomp_enc_type="backbone"), words)
    assert "precomp_enc_type='backbone'" in msg


# ---------------------------------------------------------------------------- VSRN


def vsrn_options(vocab_size: int, **over) -> argparse.Namespace:
    """VSRN train.py's parser (matching and captioning options) at test sizes, with the README's F30K flags."""
    opt = dict(
        data_path="/data", data_name="f30k_precomp", vocab_path="./vocab/", margin=0.2, num_epochs=30, batch_size=128, word_dim=WORD,
        embed_size=EMBED, grad_clip=2.0, crop_size=224, num_layers=1, learning_rate=0.0002, lr_update=10, workers=10, log_step=10,
        val_step=500, logger_name="runs/flickr_VSRN", resume="", max_violation=True, img_dim=D_IN_SCAN, finetune=False,
        cnn_type="vgg19", use_restval=False, measure="cosine", use_abs=False, no_imgnorm=False, reset_train=False, dim_vid=2048,
        dim_hidden=512, input_dropout_p=0.2, rnn_type="gru", rnn_dropout_p=0.5, dim_word=300, max_len=60, vocab_size=vocab_size,
    )
    opt.update(over)
    return argparse.Namespace(**opt)


def vsrn_modules(vocab_size: int, *, f30k: bool = True, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    img = under("fc", rand_linear(gen, EMBED, D_IN_SCAN, scale=0.3))
    for k in range(1, 5):
        for name in ("g", "theta", "phi", "W.0"):
            conv = rand_linear(gen, EMBED, EMBED, scale=0.2)  # small: four unnormalised residual layers compound
            conv["weight"] = conv["weight"].unsqueeze(-1)  # Conv1d(D, D, kernel_size=1): (D, D, 1)
            img.update(under(f"Rs_GCN_{k}.{name}", conv))
        img.update(under(f"Rs_GCN_{k}.W.1", rand_bn(gen, EMBED)))
    img.update(rand_gru(gen, "img_rnn.", EMBED, EMBED, bidirectional=False))
    if f30k:
        img.update(under("bn", rand_bn(gen, EMBED)))
    txt = {"embed.weight": torch.randn(vocab_size, WORD, generator=gen), **rand_gru(gen, "rnn.", WORD, EMBED, bidirectional=False)}
    return [img, txt]


def vsrn_l2norm(x: torch.Tensor) -> torch.Tensor:
    """VSRN model.py l2norm: over dim 1, no eps; for one image's ``(R, D)`` regions (the batch axis
    dropped) that is dim 0, the regions."""
    return x / x.pow(2).sum(0, keepdim=True).sqrt()


def official_vsrn_sims(modules, opt, words, images: np.ndarray, captions: list[str]) -> np.ndarray:
    img, txt = modules
    ims = []
    for x in torch.from_numpy(images).double():
        v = linear(img, "fc", x)  # (R, D)
        if opt.data_name != "f30k_precomp":
            v = vsrn_l2norm(v)
        v = v.t()  # (D, N), as GCN_img_emd.permute(0, 2, 1)
        for k in range(1, 5):
            conv = lambda name, t: img[f"Rs_GCN_{k}.{name}.weight"].double().squeeze(-1) @ t + img[f"Rs_GCN_{k}.{name}.bias"].double().unsqueeze(1)
            g_v = conv("g", v).t()  # (N, C)
            theta_v, phi_v = conv("theta", v).t(), conv("phi", v)  # (N, C), (C, N)
            relation = theta_v @ phi_v / v.shape[1]  # R / N
            y = (relation @ g_v).t()  # (C, N)
            v = batch_norm_eval(img, f"Rs_GCN_{k}.W.1", conv("W.0", y), 0) + v
        v = vsrn_l2norm(v.t())  # (N, D), over the regions
        state = gru_steps(v, img, "img_rnn.", "l0")[-1]
        if opt.data_name == "f30k_precomp":
            state = batch_norm_eval(img, "bn", state.unsqueeze(0), 1)[0]
        ims.append(state / state.norm() if not opt.no_imgnorm else state)
    caps = []
    for caption in captions:
        out = gru_steps(txt["embed.weight"].double()[release_ids(words, caption)], txt, "rnn.", "l0")
        caps.append(out[-1] / out[-1].norm())
    return (torch.stack(ims) @ torch.stack(caps).t()).numpy()


@pytest.mark.parametrize("over", [dict(), dict(data_name="coco_precomp"), dict(no_imgnorm=True)], ids=["f30k", "coco", "no_imgnorm"])
def test_vsrn_conversion_equals_the_release_forward(tmp_path, monkeypatch, over):
    words = release_words()
    opt = vsrn_options(len(words), **over)
    modules = vsrn_modules(len(words), f30k=opt.data_name == "f30k_precomp")
    data = write_precomp(tmp_path / opt.data_name, one_vector=False)
    conv, out = convert(tmp_path, "vsrn", modules, opt, write_pickle_vocab(tmp_path / "vocab.pkl", words, monkeypatch))
    ours = kgitm_sims(out, data, conv)
    theirs = official_vsrn_sims(modules, opt, words, np.load(data / "test_ims.npy"), CAPTIONS)
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


def test_vsrn_region_axis_norm_is_not_the_per_region_one(tmp_path, monkeypatch):
    """The release's l2 over the regions is what the converted model computes; the per-region l2 differs."""
    words = release_words()
    opt = vsrn_options(len(words), data_name="coco_precomp")
    modules = vsrn_modules(len(words), f30k=False)
    data = write_precomp(tmp_path / "coco_precomp", one_vector=False)
    conv, out = convert(tmp_path, "vsrn", modules, opt, write_pickle_vocab(tmp_path / "vocab.pkl", words, monkeypatch))
    conv.model["image_encoder"]["init_args"]["norm_axis"] = "features"
    theirs = official_vsrn_sims(modules, opt, words, np.load(data / "test_ims.npy"), CAPTIONS)
    assert np.abs(kgitm_sims(out, data, conv) - theirs).max() > 1e-2


# ---------------------------------------------------------------------------- keys and options


@pytest.mark.parametrize(
    "release, edit, named",
    [
        ("sgraf", lambda m: m[2].pop("SGR_module.2.sim_graph_w.bias"), "missing key sim_enc.SGR_module.2.sim_graph_w.bias"),
        ("sgraf", lambda m: m[2].__setitem__("SGR_module.3.graph_key_w.weight", torch.zeros(SIM, SIM)), "unexpected key sim_enc.SGR_module.3.graph_key_w.weight"),
        ("sgraf", lambda m: m[1].__setitem__("rnn.weight_ih_l0", torch.zeros(3 * EMBED, WORD)), "unexpected key txt_enc.rnn.weight_ih_l0"),
        ("sgraf", lambda m: m[2].__setitem__("sim_tranloc_w.weight", torch.zeros(SIM + 1, EMBED)), "key sim_enc.sim_tranloc_w.weight has shape"),
        ("vse_infty", lambda m: m[0].pop("mlp.bns.1.running_var"), "missing key img_enc.mlp.bns.1.running_var"),
        ("vse_infty", lambda m: m[1].pop("gpool.linear.weight"), "missing key txt_enc.gpool.linear.weight"),
        ("vse_infty", lambda m: m[0].__setitem__("mlp.layers.2.weight", torch.zeros(1)), "unexpected key img_enc.mlp.layers.2.weight"),
        ("vsrn", lambda m: m[0].pop("Rs_GCN_3.W.1.running_mean"), "missing key img_enc.Rs_GCN_3.W.1.running_mean"),
        ("vsrn", lambda m: m[0].__setitem__("Rs_GCN_5.g.weight", torch.zeros(EMBED, EMBED, 1)), "unexpected key img_enc.Rs_GCN_5.g.weight"),
    ],
    ids=["sgraf-missing", "sgraf-extra-step", "sgraf-scan-rnn-name", "sgraf-shape", "vse-unused-bn-missing", "vse-gpool-missing",
         "vse-extra", "vsrn-missing", "vsrn-extra-layer"],
)
def test_keys_are_accounted_for(tmp_path, release, edit, named):
    words = release_words()
    if release == "sgraf":
        modules, opt = sgraf_modules(len(words), "SGR"), sgraf_options(len(words))
    elif release == "vse_infty":
        modules, opt = vse_infty_modules(len(words)), vse_infty_options(len(words) + 1)
    else:
        modules, opt = vsrn_modules(len(words)), vsrn_options(len(words))
    edit(modules)
    assert named in _error(tmp_path, release, modules, opt, words)


def test_a_full_image_vsrn_model_is_refused(tmp_path):
    """VSRN's pixel models (``--data_name f30k``) are refused by name, as VSE++'s are (one shared check)."""
    words = release_words()
    msg = _error(tmp_path, "vsrn", vsrn_modules(len(words)), vsrn_options(len(words), data_name="f30k"), words)
    assert "option data_name='f30k': a full-image VSRN model" in msg and "convert a *_precomp run" in msg


def test_vsrn_batch_norm_follows_data_name(tmp_path):
    """``bn`` exists only for f30k_precomp: a COCO model with it, or an F30K model without it, is named."""
    words = release_words()
    assert "unexpected key img_enc.bn.bias" in _error(tmp_path, "vsrn", vsrn_modules(len(words), f30k=True),
                                                         vsrn_options(len(words), data_name="coco_precomp"), words)
    assert "missing key img_enc.bn.weight" in _error(tmp_path, "vsrn", vsrn_modules(len(words), f30k=False), vsrn_options(len(words)), words)


@pytest.mark.parametrize(
    "release, over, named",
    [
        ("sgraf", dict(module_name="AVE"), "option module_name='AVE'"),
        ("sgraf", dict(attention_lambda=4.0), "option attention_lambda=4.0 is not an option"),
        ("vse_infty", dict(no_imgnorm=True), "option no_imgnorm=True"),
        ("vse_infty", dict(vocab_size_=3), "option vocab_size=3"),
        ("vsrn", dict(measure="order"), "option measure='order'"),
        ("vsrn", dict(data_name="f30k"), "option data_name='f30k'"),
    ],
)
def test_options_kgitm_cannot_honour_are_named(tmp_path, release, over, named):
    words = release_words()
    if release == "sgraf":
        modules, opt = sgraf_modules(len(words), "SGR"), sgraf_options(len(words), **over)
    elif release == "vse_infty":
        modules, opt = vse_infty_modules(len(words)), vse_infty_options(len(words) + 1, **over)
    else:
        modules, opt = vsrn_modules(len(words)), vsrn_options(len(words), **over)
    assert named in _error(tmp_path, release, modules, opt, words)


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("release", ["vse_infty", "vsrn"])
def test_convert_then_kgitm_predict_writes_the_release_sims(tmp_path, monkeypatch, capsys, release):
    monkeypatch.chdir(tmp_path)
    words = release_words()
    if release == "vse_infty":
        opt, modules, naive = vse_infty_options(len(words) + 1), vse_infty_modules(len(words)), official_vse_infty_sims
        vocab = write_json_vocab(tmp_path / "f30k_precomp_vocab.json", words)
    else:
        opt, modules, naive = vsrn_options(len(words)), vsrn_modules(len(words)), official_vsrn_sims
        vocab = write_pickle_vocab(tmp_path / "f30k_precomp_vocab.pkl", words, monkeypatch)
    data = write_precomp(tmp_path / "f30k_precomp", one_vector=False)
    ckpt = save_release(tmp_path / "model_best.pth", modules, opt)
    out = tmp_path / "converted"
    main(["convert-checkpoint", release, str(ckpt), "--vocab", str(vocab), "--out", str(out)])
    assert {p.name for p in out.iterdir()} == {"config.yaml", "model.ckpt", "vocab.txt", "provenance.json"}
    sims_path = tmp_path / "SIMS.npy"
    main(["predict", "--config", str(out / "config.yaml"), "--ckpt_path", str(out / "model.ckpt"), "--data.root", str(data),
          "--trainer.accelerator", "cpu", "--sims_out", str(sims_path)])
    np.testing.assert_allclose(np.load(sims_path), naive(modules, opt, words, np.load(data / "test_ims.npy"), CAPTIONS), atol=TOL, rtol=0)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["release"] == release and provenance["release_best_rsum"] == 412.5


# ---------------------------------------------------------------------------- SGRAF = SAF + SGR, as an ensemble


@pytest.mark.slow
def test_sgraf_is_the_ensemble_of_converted_saf_and_sgr(tmp_path, monkeypatch, capsys):
    """The paper's SGRAF row: the mean of the SAF and SGR models' similarity matrices (the release's
    ``evaluation.py`` scores one model; the two are averaged offline, as VSRN's ``evaluation_models.py``
    does with ``(d + d2) / 2``). ``kgitm ensemble`` of the two converted folders computes exactly that,
    records both members, and ``kgitm compare`` shows it as one row of 2 models beside single models."""
    monkeypatch.chdir(tmp_path)
    words = release_words()
    vocab = write_json_vocab(tmp_path / "f30k_precomp_vocab.json", words)  # one vocabulary, as the release's two runs
    data = write_precomp(tmp_path / "f30k_precomp", one_vector=False)
    images = np.load(data / "test_ims.npy")
    naive, folders = {}, {}
    for seed, module in enumerate(("SAF", "SGR")):
        opt = sgraf_options(len(words), module_name=module)
        modules = sgraf_modules(len(words), module, seed=seed)
        ckpt = save_release(tmp_path / f"f30k_{module}_model_best.pth.tar", modules, opt)
        folders[module] = tmp_path / f"f30k_{module}"
        main(["convert-checkpoint", "sgraf", str(ckpt), "--vocab", str(vocab), "--out", str(folders[module])])
        naive[module] = official_sgraf_sims(modules, opt, words, images, CAPTIONS)
    capsys.readouterr()
    results = tmp_path / "sgraf.json"
    main(["ensemble",
          *(a for m in ("SAF", "SGR") for a in ("--run", str(folders[m] / "config.yaml"), str(folders[m] / "model.ckpt"))),
          "--output", str(results), "--sims-out", str(tmp_path / "sgraf.npy"), "--run-sims-dir", str(tmp_path / "members"),
          "--", "--data.root", str(data), "--trainer.accelerator", "cpu"])
    table = capsys.readouterr().out
    average = np.load(tmp_path / "sgraf.npy")
    np.testing.assert_allclose(average, (naive["SAF"] + naive["SGR"]) / 2, atol=TOL, rtol=0)
    members = sorted((tmp_path / "members").glob("*.npy"))
    np.testing.assert_allclose(np.load(members[0]), naive["SAF"], atol=TOL, rtol=0)
    np.testing.assert_allclose(np.load(members[1]), naive["SGR"], atol=TOL, rtol=0)

    record = json.loads(results.read_text())
    assert record["models"] == 2 and [m["models"] for m in record["members"]] == [1, 1]
    assert [m["source"]["config"] for m in record["members"]] == [str(folders[m] / "config.yaml") for m in ("SAF", "SGR")]
    assert record["weights"] == [0.5, 0.5]
    header = next(line for line in table.splitlines() if line.startswith("model"))
    assert header.split()[:2] == ["model", "models"]
    rows = {line.split()[0]: line.split()[1] for line in table.splitlines() if line.split() and line.split()[0] in ("f30k_SAF", "f30k_SGR", "ensemble")}
    assert rows == {"f30k_SAF": "1", "f30k_SGR": "1", "ensemble": "2"}  # members named by their converted folders

    single = tmp_path / "saf.json"
    single.write_text(json.dumps({"name": "saf", "models": 1, "results": record["members"][0]["results"]}))
    main(["compare", str(single), str(results), "--markdown"])
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| model | models |")
    assert md[2].startswith("| saf | 1 |") and md[3].startswith("| ensemble(f30k_SAF + f30k_SGR) | 2 |")


def test_vsrn_encoder_ignores_padded_regions():
    """Padding (all-zero regions after the valid ones) changes neither the GCN's region count, the
    region-axis l2 nor the GRU's last state: a padded image encodes as the unpadded one (in evaluation)."""
    from kgitm.core.batch import ImageInputs
    from kgitm.encoders.reasoning import VSRNImageEncoder

    torch.manual_seed(0)
    enc = VSRNImageEncoder(D_IN_SCAN, EMBED, final_batch_norm=True).eval()
    for layer in enc.gcn:  # a non-zero residual branch (the release initialises its batch norm to zero)
        torch.nn.init.normal_(layer.W[1].weight)
    x = torch.randn(2, REGIONS, D_IN_SCAN)
    whole = enc(ImageInputs(features=x, region_mask=torch.ones(2, REGIONS, dtype=torch.bool))).features
    padded = torch.cat([x, torch.zeros(2, 2, D_IN_SCAN)], 1)
    mask = torch.cat([torch.ones(2, REGIONS, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool)], 1)
    out = enc(ImageInputs(features=padded, region_mask=mask))
    assert out.features.shape == (2, 1, EMBED) and out.mask.all()
    torch.testing.assert_close(out.features, whole, atol=1e-6, rtol=0)
