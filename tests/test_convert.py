"""``kgitm convert-checkpoint``: released SCAN and VSE++ checkpoints -> kgitm models.

Checkpoints are built here in the releases' layout (``torch.save`` of ``{'epoch', 'model', 'best_rsum',
'opt', 'Eiters'}`` with a real ``argparse.Namespace``, random weights of the documented keys and
shapes, a json or pickled vocabulary), converted, and kgitm's similarity matrix is compared with a
naive re-implementation of each release's forward written below from its ``model.py`` (plain torch
ops on the state dict: hand-written GRU steps, the per-caption attention loop of ``xattn_score_*``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kgitm.cli import main
from kgitm.convert import convert_release, load_release_checkpoint, read_release_vocabulary
from kgitm.convert.output import build_module, write_conversion
from kgitm.convert.parts import check_vocab_size
from kgitm.convert.release import ReleaseFormatError, ReleaseOptions, ReleaseVocabulary
from kgitm.core.safe_pickle import UnsafePickleError
from kgitm.core.text import END, START, tokenize_treebank
from kgitm.lit.datamodule import PrecompDataModule

D_IN_SCAN, D_IN_VSEPP, EMBED, WORD = 12, 10, 8, 6
REGIONS, IMAGES = 4, 3
TOL = 1e-4

CAPTIONS = [
    "A man's dog runs, fast.", "Two dogs play in the park", "A MAN throws a red ball .", "the dog is on grass",
    "A zebra near a man.", "A woman rides a bike", "Bikes and cars on a street.", "A woman's bike is red",
    "People walk; the street is busy!", "A red car (parked) near a shop", "A cat sleeps on a sofa.",
    "Two cats don't play", "The sofa is red, and the cat is grey.", "A cat near a window", "An unseen platypus naps",
]
# in the vocabulary: every word of the captions except a few, which become <unk>
OOV = {"zebra", "platypus", "unseen", "busy"}


def release_words() -> list[str]:
    seen: list[str] = []
    for c in CAPTIONS:
        for t in tokenize_treebank(c):
            if t not in seen and t not in OOV:
                seen.append(t)
    rng = np.random.default_rng(0)
    rng.shuffle(seen)  # the releases' ids follow a Counter's order, not the captions'
    return ["<pad>", "<start>", "<end>", "<unk>", *seen]


def write_json_vocab(path: Path, words: list[str]) -> Path:
    # SCAN's vocab.py: word2idx, idx2word with *string* keys, idx; keys in arbitrary order
    order = list(range(len(words)))[::-1]
    path.write_text(json.dumps({"word2idx": {words[i]: i for i in order}, "idx2word": {str(i): words[i] for i in order}, "idx": len(words)}))
    return path


class Vocabulary:  # the release's class, pickled as __main__.Vocabulary (train.py imports it there)
    def __init__(self, words: list[str]) -> None:
        self.word2idx = {w: i for i, w in enumerate(words)}
        self.idx2word = {i: w for i, w in enumerate(words)}
        self.idx = len(words)


def write_pickle_vocab(path: Path, words: list[str], monkeypatch) -> Path:
    monkeypatch.setattr(Vocabulary, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "Vocabulary", Vocabulary, raising=False)
    path.write_bytes(pickle.dumps(Vocabulary(words), protocol=2))
    return path


def write_precomp(root: Path, *, one_vector: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    shape = (IMAGES, D_IN_VSEPP) if one_vector else (IMAGES, REGIONS, D_IN_SCAN)
    np.save(root / "test_ims.npy", rng.normal(size=shape).astype(np.float32))
    (root / "test_caps.txt").write_text("".join(f"{c}\n" for c in CAPTIONS))
    return root


# ---------------------------------------------------------------------------- release checkpoints


def scan_options(vocab_size: int, **over) -> argparse.Namespace:
    """SCAN train.py's parser defaults (+ vocab_size), with the README's --bi_gru --max_violation."""
    opt = dict(
        data_path="/home/author/data", data_name="f30k_precomp", vocab_path="/home/author/vocab", margin=0.2, num_epochs=30,
        batch_size=128, word_dim=WORD, embed_size=EMBED, grad_clip=2.0, num_layers=1, learning_rate=0.0002, lr_update=15,
        workers=10, log_step=10, val_step=500, logger_name="./runs/runX/log", model_name="./runs/runX/checkpoint", resume="",
        max_violation=True, img_dim=D_IN_SCAN, no_imgnorm=False, no_txtnorm=False, raw_feature_norm="clipped_l2norm",
        agg_func="LogSumExp", cross_attn="t2i", precomp_enc_type="basic", bi_gru=True, lambda_lse=6.0, lambda_softmax=9.0,
        vocab_size=vocab_size,
    )
    opt.update(over)
    return argparse.Namespace(**opt)


def vsepp_options(vocab_size: int, **over) -> argparse.Namespace:
    opt = dict(
        data_path="/w/31/faghri/vsepp_data/", data_name="f30k_precomp", vocab_path="./vocab/", margin=0.2, num_epochs=30,
        batch_size=128, word_dim=WORD, embed_size=EMBED, grad_clip=2.0, crop_size=224, num_layers=1, learning_rate=0.0002,
        lr_update=15, workers=10, log_step=10, val_step=500, logger_name="runs/runX", resume="", max_violation=True,
        img_dim=D_IN_VSEPP, finetune=False, cnn_type="vgg19", use_restval=False, measure="cosine", use_abs=False,
        no_imgnorm=False, reset_train=False, vocab_size=vocab_size,
    )
    opt.update(over)
    return argparse.Namespace(**opt)


def gru_state(gen: torch.Generator, *, layers: int, bidirectional: bool) -> dict[str, torch.Tensor]:
    out = {}
    for layer in range(layers):
        size_in = WORD if layer == 0 else EMBED * (2 if bidirectional else 1)
        for sfx in ("", "_reverse") if bidirectional else ("",):
            out[f"rnn.weight_ih_l{layer}{sfx}"] = torch.randn(3 * EMBED, size_in, generator=gen) * 0.4
            out[f"rnn.weight_hh_l{layer}{sfx}"] = torch.randn(3 * EMBED, EMBED, generator=gen) * 0.4
            out[f"rnn.bias_ih_l{layer}{sfx}"] = torch.randn(3 * EMBED, generator=gen) * 0.1
            out[f"rnn.bias_hh_l{layer}{sfx}"] = torch.randn(3 * EMBED, generator=gen) * 0.1
    return out


def scan_modules(vocab_size: int, *, bidirectional: bool = True, layers: int = 1, weight_norm: bool = False, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    if weight_norm:
        img = {"fc.weight_g": torch.tensor(1.7), "fc.weight_v": torch.randn(EMBED, D_IN_SCAN, generator=gen)}
    else:
        img = {"fc.weight": torch.randn(EMBED, D_IN_SCAN, generator=gen) * 0.3}
    img["fc.bias"] = torch.randn(EMBED, generator=gen) * 0.1
    txt = {"embed.weight": torch.randn(vocab_size, WORD, generator=gen), **gru_state(gen, layers=layers, bidirectional=bidirectional)}
    return [img, txt]


def vsepp_modules(vocab_size: int, *, layers: int = 1, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    img = {"fc.weight": torch.randn(EMBED, D_IN_VSEPP, generator=gen) * 0.3, "fc.bias": torch.randn(EMBED, generator=gen) * 0.1}
    txt = {"embed.weight": torch.randn(vocab_size, WORD, generator=gen), **gru_state(gen, layers=layers, bidirectional=False)}
    return [img, txt]


def save_release(path: Path, modules, opt, *, legacy: bool = False) -> Path:
    blob = {"epoch": 11, "model": modules, "best_rsum": 412.5, "opt": opt, "Eiters": 25000}
    torch.save(blob, path, _use_new_zipfile_serialization=not legacy)
    return path


# ---------------------------------------------------------------------------- the releases' forward, naively


def official_l2norm(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    return x / (x.pow(2).sum(dim, keepdim=True).sqrt() + eps)  # SCAN model.py l2norm (VSE++: eps = 0)


def gru_direction(x: torch.Tensor, s: dict, key: str) -> torch.Tensor:
    """torch.nn.GRU's equations for one direction of one layer, step by step. ``x (L, F) -> (L, H)``."""
    w_ih, w_hh, b_ih, b_hh = (s[f"rnn.{k}_{key}"].double() for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    h = torch.zeros(w_hh.shape[1], dtype=torch.float64)
    out = []
    for t in range(x.shape[0]):
        gi, gh = w_ih @ x[t] + b_ih, w_hh @ h + b_hh
        r = torch.sigmoid(gi[:EMBED] + gh[:EMBED])
        z = torch.sigmoid(gi[EMBED:2 * EMBED] + gh[EMBED:2 * EMBED])
        n = torch.tanh(gi[2 * EMBED:] + r * gh[2 * EMBED:])
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out)


def official_text(txt: dict, ids: list[int], *, layers: int, bidirectional: bool) -> torch.Tensor:
    x = txt["embed.weight"].double()[ids]
    for layer in range(layers):
        fwd = gru_direction(x, txt, f"l{layer}")
        if bidirectional:
            bwd = gru_direction(x.flip(0), txt, f"l{layer}_reverse").flip(0)
            x = torch.cat([fwd, bwd], -1)
        else:
            x = fwd
    return x


def release_ids(words: list[str], caption: str) -> list[int]:
    # data.py: [vocab('<start>')] + [vocab(token) for token in word_tokenize(caption.lower())] + [vocab('<end>')]
    index = {w: i for i, w in enumerate(words)}
    return [index[START], *(index.get(t, index["<unk>"]) for t in tokenize_treebank(caption)), index[END]]


def func_attention(query: torch.Tensor, context: torch.Tensor, *, smooth: float, raw_feature_norm: str) -> torch.Tensor:
    """SCAN model.py func_attention for one (query owner, context owner) pair: query (Q, d), context (C, d)."""
    attn = context @ query.t()  # (C, Q)
    if raw_feature_norm == "clipped_l2norm":
        attn = F.leaky_relu(attn, 0.1)
    attn = official_l2norm(attn, 1)  # over the query axis
    attn = torch.softmax(attn.t() * smooth, dim=1)  # (Q, C), over the context
    return attn @ context  # (Q, d)


def official_scan_sims(modules, opt: argparse.Namespace, words: list[str], images: np.ndarray, captions: list[str]) -> np.ndarray:
    img, txt = modules
    if "fc.weight_g" in img:
        weight = img["fc.weight_g"] * img["fc.weight_v"] / img["fc.weight_v"].norm()
    else:
        weight = img["fc.weight"]
    regions = official_l2norm(torch.from_numpy(images).double() @ weight.double().t() + img["fc.bias"].double())
    sims = np.zeros((len(images), len(captions)))
    for j, caption in enumerate(captions):  # xattn_score_*: one caption at a time
        out = official_text(txt, release_ids(words, caption), layers=opt.num_layers, bidirectional=opt.bi_gru)
        if opt.bi_gru:
            out = (out[:, :EMBED] + out[:, EMBED:]) / 2
        cap = official_l2norm(out)
        for i in range(len(images)):
            if opt.cross_attn == "t2i":
                query, context = cap, regions[i]
            else:
                query, context = regions[i], cap
            attended = func_attention(query, context, smooth=opt.lambda_softmax, raw_feature_norm=opt.raw_feature_norm)
            row = (query * attended).sum(1) / (query.norm(dim=1) * attended.norm(dim=1)).clamp(min=1e-8)
            agg = {"LogSumExp": lambda r: torch.log(torch.exp(r * opt.lambda_lse).sum()) / opt.lambda_lse,
                   "Mean": torch.mean, "Max": torch.max, "Sum": torch.sum}[opt.agg_func]
            sims[i, j] = float(agg(row))
    return sims


def official_vsepp_sims(modules, opt: argparse.Namespace, words: list[str], images: np.ndarray, captions: list[str]) -> np.ndarray:
    img, txt = modules
    im = torch.from_numpy(images).double() @ img["fc.weight"].double().t() + img["fc.bias"].double()
    if not opt.no_imgnorm:
        im = official_l2norm(im, eps=0.0)
    caps = []
    for caption in captions:
        out = official_text(txt, release_ids(words, caption), layers=opt.num_layers, bidirectional=False)
        caps.append(official_l2norm(out[-1], eps=0.0))  # the output at step len - 1
    return (im @ torch.stack(caps).t()).numpy()


# ---------------------------------------------------------------------------- kgitm's side


def kgitm_sims(out_dir: Path, data: Path, modules_conv) -> np.ndarray:
    """The converted module's exact similarity matrix over the data's test split, with the converted
    folder's vocabulary and tokenisation (what kgitm predict does, without the trainer)."""
    dm = PrecompDataModule(str(data), vocab_file=str(out_dir / "vocab.txt"), tokenizer="treebank", boundary_tokens=True,
                           max_words=1024, diagnostics=False, eval_batch_size=4)
    model = build_module(modules_conv).model.eval()
    encoded = model.encode_split(dm.test_dataloader())
    return model.similarity(encoded.images, encoded.captions).numpy()


def convert(tmp_path: Path, release: str, modules, opt, vocab_path: Path, **kw):
    ckpt = save_release(tmp_path / f"{release}_model_best.pth.tar", modules, opt, **kw)
    checkpoint = load_release_checkpoint(ckpt)
    vocab = read_release_vocabulary(vocab_path)
    conv = convert_release(release, checkpoint, vocab)
    out = tmp_path / f"{release}_converted"
    write_conversion(conv, out, checkpoint, vocab)
    return conv, out


SCAN_VARIANTS = [
    dict(),  # the README's t2i LSE (lambda_lse 6, lambda_softmax 9)
    dict(cross_attn="t2i", agg_func="Mean", lambda_softmax=9.0),
    dict(cross_attn="i2t", agg_func="LogSumExp", lambda_lse=5.0, lambda_softmax=4.0),
    dict(cross_attn="i2t", agg_func="Mean", lambda_softmax=4.0),
    dict(cross_attn="t2i", agg_func="Max", raw_feature_norm="l2norm"),
    dict(cross_attn="i2t", agg_func="Sum", bi_gru=False, num_layers=2),
    dict(precomp_enc_type="weight_norm"),
]


@pytest.mark.parametrize("over", SCAN_VARIANTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "readme-t2i-lse")
def test_scan_conversion_equals_the_release_forward(tmp_path, over):
    words = release_words()
    opt = scan_options(len(words), **over)
    modules = scan_modules(len(words), bidirectional=opt.bi_gru, layers=opt.num_layers, weight_norm=opt.precomp_enc_type == "weight_norm")
    data = write_precomp(tmp_path / "f30k_precomp", one_vector=False)
    conv, out = convert(tmp_path, "scan", modules, opt, write_json_vocab(tmp_path / "f30k_precomp_vocab.json", words))
    ours = kgitm_sims(out, data, conv)
    theirs = official_scan_sims(modules, opt, words, np.load(data / "test_ims.npy"), CAPTIONS)
    assert ours.shape == (IMAGES, len(CAPTIONS))
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


@pytest.mark.parametrize("over", [dict(), dict(no_imgnorm=True), dict(num_layers=2)], ids=["vse++", "vse0-no_imgnorm", "two-layers"])
def test_vsepp_conversion_equals_the_release_forward(tmp_path, monkeypatch, over):
    words = release_words()
    opt = vsepp_options(len(words), **over)
    modules = vsepp_modules(len(words), layers=opt.num_layers)
    data = write_precomp(tmp_path / "f30k_precomp", one_vector=True)
    conv, out = convert(tmp_path, "vsepp", modules, opt, write_pickle_vocab(tmp_path / "f30k_precomp_vocab.pkl", words, monkeypatch))
    ours = kgitm_sims(out, data, conv)
    theirs = official_vsepp_sims(modules, opt, words, np.load(data / "test_ims.npy"), CAPTIONS)
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


def test_legacy_format_data_parallel_prefixes_and_unknown_words(tmp_path):
    """A pre-1.6 (non-zip) file whose keys carry DataParallel's ``module.`` converts as the plain one."""
    words = release_words()
    opt = scan_options(len(words))
    modules = scan_modules(len(words))
    prefixed = [{f"module.{k}": v for k, v in m.items()} for m in modules]
    vocab = write_json_vocab(tmp_path / "vocab.json", words)
    data = write_precomp(tmp_path / "data", one_vector=False)
    conv, out = convert(tmp_path, "scan", prefixed, opt, vocab, legacy=True)
    np.testing.assert_allclose(kgitm_sims(out, data, conv), official_scan_sims(modules, opt, words, np.load(data / "test_ims.npy"), CAPTIONS), atol=TOL, rtol=0)
    itos = (out / "vocab.txt").read_text().splitlines()
    assert itos[:4] == ["<pad>", "<unk>", "<start>", "<end>"] and sorted(itos) == sorted(words)
    assert not OOV & set(itos)


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("release", ["scan", "vsepp", "gsmn"])
def test_convert_then_kgitm_predict_writes_the_release_sims(tmp_path, monkeypatch, capsys, release):
    monkeypatch.chdir(tmp_path)
    words = release_words()
    files = {"config.yaml", "model.ckpt", "vocab.txt", "provenance.json"}
    if release == "gsmn":
        opt, modules = gsmn_options(len(words)), gsmn_modules(len(words))
        vocab = write_json_vocab(tmp_path / "f30k_precomp_vocab.json", words)
        data = write_gsmn_precomp(tmp_path / "f30k_precomp", words)
        files.add("release_vocab.txt")

        def naive(modules, opt, words, images, captions):
            return official_gsmn_sims(modules, opt, words, images, np.load(data / "test_ims_bbx.npy"), np.load(data / "test_ims_size.npy"),
                                      [release_ids(words, c) for c in captions])
    elif release == "scan":
        opt, modules = scan_options(len(words)), scan_modules(len(words))
        vocab = write_json_vocab(tmp_path / "f30k_precomp_vocab.json", words)
        data, naive = write_precomp(tmp_path / "f30k_precomp", one_vector=False), official_scan_sims
    else:
        opt, modules = vsepp_options(len(words)), vsepp_modules(len(words))
        vocab = write_pickle_vocab(tmp_path / "f30k_precomp_vocab.pkl", words, monkeypatch)
        data, naive = write_precomp(tmp_path / "f30k_precomp", one_vector=True), official_vsepp_sims
    ckpt = save_release(tmp_path / "model_best.pth.tar", modules, opt)
    out = tmp_path / "converted"
    main(["convert-checkpoint", release, str(ckpt), "--vocab", str(vocab), "--out", str(out)])
    assert {p.name for p in out.iterdir()} == files
    assert "kgitm predict --config" in capsys.readouterr().out
    sims_path = tmp_path / "SIMS.npy"
    main(["predict", "--config", str(out / "config.yaml"), "--ckpt_path", str(out / "model.ckpt"), "--data.root", str(data),
          "--trainer.accelerator", "cpu", "--sims_out", str(sims_path)])
    sims = np.load(sims_path)
    np.testing.assert_allclose(sims, naive(modules, opt, words, np.load(data / "test_ims.npy"), CAPTIONS), atol=TOL, rtol=0)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["release"] == release and provenance["release_best_rsum"] == 412.5 and len(provenance["checkpoint"]["sha256"]) == 64


# ---------------------------------------------------------------------------- refusals


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch kgitm_convert_pwned",))


def test_a_checkpoint_calling_os_system_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    words = release_words()
    path = tmp_path / "evil.pth.tar"
    torch.save({"epoch": 0, "model": scan_modules(len(words)), "best_rsum": 0.0, "opt": _Evil(), "Eiters": 0}, path)
    with pytest.raises(UnsafePickleError) as err:
        load_release_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and f"{os.system.__module__}.system" in msg and "\n" not in msg
    assert not (tmp_path / "kgitm_convert_pwned").exists()


def test_a_vocabulary_pickle_calling_os_system_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "vocab.pkl"
    path.write_bytes(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(UnsafePickleError, match=f"{path}.*{os.system.__module__}.system"):
        read_release_vocabulary(path)
    assert not (tmp_path / "kgitm_convert_pwned").exists()


def test_the_cli_reports_a_refusal_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    words = release_words()
    path = tmp_path / "evil.pth.tar"
    torch.save({"epoch": 0, "model": scan_modules(len(words)), "best_rsum": 0.0, "opt": _Evil(), "Eiters": 0}, path)
    vocab = write_json_vocab(tmp_path / "vocab.json", words)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["convert-checkpoint", "scan", str(path), "--vocab", str(vocab), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("kgitm convert-checkpoint: error:") and err.count("\n") == 1 and "system" in err
    assert not (tmp_path / "out").exists()


def _conversion_error(tmp_path, modules, opt, release="scan", vocab_words=None, **kw):
    words = vocab_words or release_words()
    vocab = write_json_vocab(tmp_path / "vocab.json", words)
    ckpt = save_release(tmp_path / "ckpt.pth.tar", modules, opt)
    with pytest.raises(ReleaseFormatError) as err:
        convert_release(release, load_release_checkpoint(ckpt), read_release_vocabulary(vocab), **kw)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_missing_key_is_named(tmp_path):
    words = release_words()
    modules = scan_modules(len(words))
    del modules[1]["rnn.bias_hh_l0_reverse"]
    assert "missing key txt_enc.rnn.bias_hh_l0_reverse" in _conversion_error(tmp_path, modules, scan_options(len(words)))


def test_an_unexpected_key_is_named(tmp_path):
    words = release_words()
    modules = scan_modules(len(words))
    modules[0]["fc.extra_scale"] = torch.ones(1)
    assert "unexpected key img_enc.fc.extra_scale" in _conversion_error(tmp_path, modules, scan_options(len(words)))


def test_weight_norm_keys_under_basic_options_are_named(tmp_path):
    words = release_words()
    msg = _conversion_error(tmp_path, scan_modules(len(words), weight_norm=True), scan_options(len(words)))
    assert "missing key img_enc.fc.weight" in msg


def test_reverse_directions_without_bi_gru_are_unexpected(tmp_path):
    words = release_words()
    msg = _conversion_error(tmp_path, scan_modules(len(words), bidirectional=True), scan_options(len(words), bi_gru=False))
    assert "unexpected key txt_enc.rnn.bias_hh_l0_reverse" in msg


@pytest.mark.parametrize(
    "over, release, named",
    [
        (dict(no_imgnorm=True), "scan", "option no_imgnorm=True"),
        (dict(no_txtnorm=True), "scan", "option no_txtnorm=True"),
        (dict(raw_feature_norm="softmax"), "scan", "option raw_feature_norm='softmax'"),
        (dict(agg_func="Median"), "scan", "option agg_func='Median'"),
        (dict(precomp_enc_type="backbone"), "scan", "option precomp_enc_type='backbone'"),
        (dict(measure="order"), "vsepp", "option measure='order'"),
        (dict(use_abs=True), "vsepp", "option use_abs=True"),
        (dict(data_name="f30k"), "vsepp", "option data_name='f30k'"),
        (dict(dropout=0.4), "scan", "option dropout=0.4"),
    ],
)
def test_an_option_kgitm_cannot_honour_is_named(tmp_path, over, release, named):
    words = release_words()
    if release == "scan":
        modules, opt = scan_modules(len(words)), scan_options(len(words), **over)
    else:
        modules, opt = vsepp_modules(len(words)), vsepp_options(len(words), **over)
    assert named in _conversion_error(tmp_path, modules, opt, release=release)


def test_an_unknown_option_can_be_declared_harmless(tmp_path):
    words = release_words()
    ckpt = save_release(tmp_path / "ckpt.pth.tar", scan_modules(len(words)), scan_options(len(words), seed=7))
    conv = convert_release("scan", load_release_checkpoint(ckpt), read_release_vocabulary(write_json_vocab(tmp_path / "v.json", words)),
                           ignore_options=["seed"])
    assert conv.model["matcher"]["init_args"]["direction"] == "t2i"


def test_a_full_image_vsepp_model_is_refused(tmp_path):
    words = release_words()
    modules = vsepp_modules(len(words))
    modules[0]["cnn.module.features.0.weight"] = torch.zeros(2)
    assert "unexpected key img_enc.cnn.module.features.0.weight" in _conversion_error(tmp_path, modules, vsepp_options(len(words)), release="vsepp")


def test_the_wrong_vocabulary_is_named(tmp_path):
    words = release_words()
    msg = _conversion_error(tmp_path, scan_modules(len(words)), scan_options(len(words)), vocab_words=words[:-2])
    assert "vocab_size" in msg and "vocab.json" in msg


@pytest.mark.parametrize("appended, named", [(None, "has 3 words;"), ("<mask>", "has 2 words (+ <mask>);")])
def test_the_vocabulary_size_check_names_both_sizes(tmp_path, appended, named):
    vocab = ReleaseVocabulary(tmp_path / "vocab.json", ["<pad>", "a", "<mask>"])
    check_vocab_size(ReleaseOptions({"vocab_size": 3}, tmp_path / "ckpt.pth.tar"), vocab, appended=appended)  # equal: passes
    check_vocab_size(ReleaseOptions({}, tmp_path / "ckpt.pth.tar"), vocab)  # no option saved: nothing to check
    with pytest.raises(ReleaseFormatError) as err:
        check_vocab_size(ReleaseOptions({"vocab_size": 5}, tmp_path / "ckpt.pth.tar"), vocab, appended=appended)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'ckpt.pth.tar'}: option vocab_size=5 but {tmp_path / 'vocab.json'} ") and named in msg


def test_vocabulary_files_are_checked(tmp_path):
    words = release_words()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"word2idx": {w: i for i, w in enumerate(words)}, "idx2word": {str(i): w for i, w in enumerate(words) if i != 5}, "idx": len(words)}))
    with pytest.raises(ReleaseFormatError, match="id 5 is missing"):
        read_release_vocabulary(bad)
    swapped = ["<start>", "<pad>", *words[2:]]
    with pytest.raises(ReleaseFormatError, match="first ids must be"):
        read_release_vocabulary(write_json_vocab(tmp_path / "swapped.json", swapped))


# ---------------------------------------------------------------------------- the releases' tokenisation


@pytest.mark.parametrize(
    "caption, tokens",
    [  # nltk.tokenize.word_tokenize(caption.lower()) (NLTK 3.x)
        ("A man's dog runs, fast.", ["a", "man", "'s", "dog", "runs", ",", "fast", "."]),
        ("Two dogs. They don't play", ["two", "dogs", ".", "they", "do", "n't", "play"]),
        ('He said "hi" (loudly)!', ["he", "said", "``", "hi", "''", "(", "loudly", ")", "!"]),
        ("A 1,000-piece puzzle; cannot stop...", ["a", "1,000-piece", "puzzle", ";", "can", "not", "stop", "..."]),
        ("People in the street .", ["people", "in", "the", "street", "."]),
        ("The U.S. flag", ["the", "u.s.", "flag"]),
    ],
)
def test_treebank_tokens_are_word_tokenize_of_the_lowercased_caption(caption, tokens):
    assert tokenize_treebank(caption) == tokens


def test_release_tokenisation_and_graph_stores_exclude_each_other(tmp_path):
    data = write_precomp(tmp_path / "data", one_vector=False)
    (tmp_path / "v.txt").write_text("<pad>\n<unk>\n")
    with pytest.raises(ValueError, match="graph store"):
        PrecompDataModule(str(data), vocab_file=str(tmp_path / "v.txt"), tokenizer="treebank", graph_store=str(tmp_path))


# ---------------------------------------------------------------------------- GSMN


GSMN_BLOCKS, GSMN_HIDDEN, GSMN_KERNELS = 4, 8, 4


def gsmn_options(vocab_size: int, **over) -> argparse.Namespace:
    """GSMN train.py's parser (+ vocab_size), with the README's F30K flags (--bi_gru, lambda 20)."""
    opt = dict(
        data_path="./data/", data_name="f30k_precomp", vocab_path="./vocab/", margin=0.2, num_epochs=30, batch_size=64,
        word_dim=WORD, embed_size=EMBED, grad_clip=2.0, num_layers=1, learning_rate=0.0002, lr_update=15, workers=10,
        log_step=100, val_step=15000, logger_name="./runs/runX/log", model_name="./runs/runX/checkpoint", resume="",
        max_violation=True, img_dim=D_IN_SCAN, no_imgnorm=False, no_txtnorm=False, bi_gru=True, lambda_softmax=20.0,
        feat_dim=GSMN_BLOCKS, num_block=GSMN_BLOCKS, hid_dim=GSMN_HIDDEN, out_dim=1, is_sparse=False, vocab_size=vocab_size,
    )
    opt.update(over)
    return argparse.Namespace(**opt)


def _weight_normed(gen: torch.Generator, out: int, inp: int) -> dict[str, torch.Tensor]:
    return {"weight_g": torch.rand(out, 1, generator=gen) + 0.5, "weight_v": torch.randn(out, inp, generator=gen),
            "bias": torch.randn(out, generator=gen) * 0.1}


def gsmn_modules(vocab_size: int, seed: int = 0):
    img, txt = scan_modules(vocab_size, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    k, hk = GSMN_KERNELS, GSMN_HIDDEN // GSMN_KERNELS
    vis = {
        "graph_convolution_1.mean_rho": torch.rand(k, 1, generator=gen),
        "graph_convolution_1.mean_theta": (torch.rand(k, 1, generator=gen) * 2 - 1) * np.pi,
        "graph_convolution_1.precision_rho": torch.rand(k, 1, generator=gen) * 0.7 + 0.3,
        "graph_convolution_1.precision_theta": torch.rand(k, 1, generator=gen) * 0.7 + 0.3,
        **{f"graph_convolution_1.conv_weights.{i}.weight": torch.randn(hk, GSMN_BLOCKS, generator=gen) for i in range(k)},
    }
    tex = {
        "graph_convolution_3.params": torch.rand(k, 1, generator=gen) * 2 - 1,
        **{f"graph_convolution_3.conv_weights.{i}.{n}": torch.randn(*s, generator=gen)
           for i in range(k) for n, s in (("weight", (hk, GSMN_BLOCKS)), ("bias", (hk,)))},
    }
    for part in (vis, tex):
        for name, (out, inp) in (("out_1", (GSMN_HIDDEN, GSMN_HIDDEN)), ("out_2", (1, GSMN_HIDDEN))):
            part.update({f"{name}.{key}": v for key, v in _weight_normed(gen, out, inp).items()})
    return [img, txt, vis, tex]


def write_gsmn_precomp(root: Path, words: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    np.save(root / "test_ims.npy", rng.normal(size=(IMAGES, REGIONS, D_IN_SCAN)).astype(np.float32))
    sizes = np.array([[640.0, 480.0], [500.0, 375.0], [333.0, 500.0]], np.float32)[:IMAGES]  # (width, height)
    xy = rng.uniform(0, 0.6, size=(IMAGES, REGIONS, 2))
    wh = rng.uniform(0.1, 0.4, size=(IMAGES, REGIONS, 2))
    boxes = np.concatenate([xy, xy + wh], -1) * np.concatenate([sizes, sizes], -1)[:, None, :]
    np.save(root / "test_ims_bbx.npy", boxes.astype(np.float32))
    np.save(root / "test_ims_size.npy", sizes)
    # {split}_precaps_stan.txt: comma-separated ids of (CoreNLP) tokens
    (root / "test_precaps_stan.txt").write_text("".join(",".join(map(str, release_ids(words, c))) + "\n" for c in CAPTIONS))
    return root


def _block_cosine(query: torch.Tensor, context: torch.Tensor, blocks: int) -> torch.Tensor:
    """graph_model.py: split into ``blocks`` chunks of embed_size / blocks dims, cosine_similarity per chunk."""
    q = torch.stack(torch.split(query, query.shape[-1] // blocks, dim=-1), dim=-2)
    c = torch.stack(torch.split(context, context.shape[-1] // blocks, dim=-1), dim=-2)
    return (q * c).sum(-1) / (q.norm(dim=-1) * c.norm(dim=-1)).clamp(min=1e-8)


def _inter_relations(k: torch.Tensor, q: torch.Tensor, lam: float) -> torch.Tensor:
    """graph_model.py inter_relations: (queryL, sourceL) attention of the queries ``q`` over ``k``."""
    attn = official_l2norm(F.leaky_relu(k @ q.t(), 0.1), 1)  # (sourceL, queryL), l2 over the queries
    return torch.softmax(attn.t() * lam, dim=1)


def _weight_norm(part: dict, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    v, g = part[f"{name}.weight_v"].double(), part[f"{name}.weight_g"].double()
    return g * v / v.norm(dim=1, keepdim=True), part[f"{name}.bias"].double()


def _score(part: dict, hidden: torch.Tensor) -> torch.Tensor:
    (w1, b1), (w2, b2) = _weight_norm(part, "out_1"), _weight_norm(part, "out_2")
    return (torch.tanh(hidden @ w1.t() + b1) @ w2.t() + b2).mean()


def official_gsmn_sims(modules, opt, words, images, boxes_px, sizes, precaps: list[list[int]], depends=None) -> np.ndarray:
    """graph_model.py VisualGraph + TextualGraph and layers.py, one (caption, image) pair at a time, on boxes
    divided as the released models' data.py did (x by image_h, y by image_w)."""
    img, txt, vis, tex = modules
    nb, k = opt.num_block, GSMN_KERNELS
    regions = official_l2norm(torch.from_numpy(images).double() @ img["fc.weight"].double().t() + img["fc.bias"].double())
    scale = np.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], -1)[:, None, :]  # h, w, h, w
    boxes = torch.from_numpy(boxes_px / scale).double()
    gc = "graph_convolution_1."
    m_rho, m_theta, p_rho, p_theta = (vis[gc + n].double().view(1, 1, -1) for n in ("mean_rho", "mean_theta", "precision_rho", "precision_theta"))
    sims = np.zeros((len(images), len(precaps)))
    for c, ids in enumerate(precaps):
        out = official_text(txt, ids, layers=opt.num_layers, bidirectional=opt.bi_gru)
        cap = official_l2norm((out[:, :EMBED] + out[:, EMBED:]) / 2 if opt.bi_gru else out)
        n_word = cap.shape[0]
        intra = torch.softmax(cap @ cap.t() * opt.lambda_softmax, dim=1)  # intra_relations
        for i in range(len(images)):
            v = regions[i]
            n_region = v.shape[0]
            # i2t: VisualGraph
            x_v = _block_cosine(v, _inter_relations(cap, v, opt.lambda_softmax) @ cap, nb)  # (R, B)
            centre = boxes[i, :, :2] + 0.5 * (boxes[i, :, 2:] - boxes[i, :, :2])
            pseudo = centre.view(-1, 1, 2) - centre.view(1, -1, 2)  # [i, j] = c_i - c_j
            rho = pseudo.norm(dim=-1).unsqueeze(-1)
            theta = torch.atan2(pseudo[..., 0], pseudo[..., 1]).unsqueeze(-1)
            w_rho = torch.exp(-0.5 * (rho - m_rho) ** 2 / (1e-14 + p_rho ** 2))
            first = (theta - m_theta).abs()
            w_theta = torch.exp(-0.5 * torch.minimum(first, (2 * np.pi - first).abs()) ** 2 / (1e-14 + p_theta ** 2))
            w = w_rho * w_theta
            w = w / w.sum(-1, keepdim=True)  # (R, R, K), over the kernels
            neighbours = x_v.unsqueeze(1).repeat(1, n_region, 1)  # every neighbour is the node itself
            patch = torch.einsum("ijk,ijb->ikb", w, neighbours)
            hidden = torch.cat([patch[:, q] @ vis[f"{gc}conv_weights.{q}.weight"].double().t() for q in range(k)], -1)
            i2t = _score(vis, hidden)
            # t2i: TextualGraph
            x_t = _block_cosine(cap, _inter_relations(v, cap, opt.lambda_softmax) @ v, nb)  # (L, B)
            if depends is None:
                neighbours = x_t.unsqueeze(1).repeat(1, n_word, 1)
                weights = intra
            else:
                adj = torch.eye(n_word, dtype=torch.float64)
                for e, (a, b) in enumerate(depends[c]):
                    if e and a < n_word and b < n_word:
                        adj[a, b] = adj[b, a] = 1.0
                neighbours = adj.unsqueeze(-1) * x_t.unsqueeze(1)
                weights = official_l2norm(adj * intra, 1)
            kw = weights.unsqueeze(-1) * tex["graph_convolution_3.params"].double().view(1, 1, -1)
            kw = kw / kw.sum(1, keepdim=True)  # compute_weights: over the neighbours
            patch = torch.einsum("ijk,ijb->ikb", kw, neighbours)
            hidden = torch.cat([patch[:, q] @ tex[f"graph_convolution_3.conv_weights.{q}.weight"].double().t()
                                + tex[f"graph_convolution_3.conv_weights.{q}.bias"].double() for q in range(k)], -1)
            sims[i, c] = float(i2t + _score(tex, hidden))
    return sims


def gsmn_kgitm_sims(out_dir: Path, data: Path, conv) -> np.ndarray:
    dm = PrecompDataModule(str(data), vocab_file=str(out_dir / "vocab.txt"), tokenizer="ids", id_vocabulary=str(out_dir / "release_vocab.txt"),
                           captions_suffix="precaps_stan.txt", box_normalization="gsmn_release", require_boxes=True,
                           boundary_tokens=False, max_words=1024, diagnostics=False, eval_batch_size=4)
    model = build_module(conv).model.eval()
    encoded = model.encode_split(dm.test_dataloader())
    return model.similarity(encoded.images, encoded.captions).numpy()


@pytest.mark.parametrize("over", [dict(), dict(is_sparse=True), dict(bi_gru=False, lambda_softmax=10.0)], ids=["dense", "sparse", "uni-gru-coco-lambda"])
def test_gsmn_conversion_equals_the_release_forward(tmp_path, over):
    words = release_words()
    opt = gsmn_options(len(words), **over)
    modules = gsmn_modules(len(words))
    if not opt.bi_gru:
        modules[1] = {k: v for k, v in modules[1].items() if not k.endswith("_reverse")}
    data = write_gsmn_precomp(tmp_path / "f30k_precomp", words)
    conv, out = convert(tmp_path, "gsmn", modules, opt, write_json_vocab(tmp_path / "f30k_precomp_vocab.json", words))
    assert (out / "release_vocab.txt").read_text().splitlines() == words
    ours = gsmn_kgitm_sims(out, data, conv)
    precaps = [release_ids(words, c) for c in CAPTIONS]
    rng = np.random.default_rng(3)  # dependency arcs (1-based [gov, dep], entry 0 = ROOT): the release's forward ignores them
    depends = [[[0, 1]] + [list(map(int, rng.integers(0, len(p), 2))) for _ in range(4)] for p in precaps] if opt.is_sparse else None
    theirs = official_gsmn_sims(modules, opt, words, np.load(data / "test_ims.npy"), np.load(data / "test_ims_bbx.npy"),
                                np.load(data / "test_ims_size.npy"), precaps, depends)
    assert np.abs(theirs).max() > 0.1  # not a degenerate comparison
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


def test_gsmn_box_normalisation_matters(tmp_path):
    """The released models' swapped box scaling is part of the forward: the plain one scores differently."""
    words = release_words()
    data = write_gsmn_precomp(tmp_path / "data", words)
    conv, out = convert(tmp_path, "gsmn", gsmn_modules(len(words)), gsmn_options(len(words)), write_json_vocab(tmp_path / "v.json", words))
    swapped = gsmn_kgitm_sims(out, data, conv)
    dm = PrecompDataModule(str(data), vocab_file=str(out / "vocab.txt"), tokenizer="ids", id_vocabulary=str(out / "release_vocab.txt"),
                           captions_suffix="precaps_stan.txt", require_boxes=True, diagnostics=False)
    model = build_module(conv).model.eval()
    enc = model.encode_split(dm.test_dataloader())
    assert not np.allclose(model.similarity(enc.images, enc.captions).numpy(), swapped, atol=1e-4)


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda m: m[2].pop("out_1.weight_g"), "missing key i2t_match_G.out_1.weight_g"),
        (lambda m: m[3].pop("graph_convolution_3.conv_weights.2.bias"), "missing key t2i_match_G.graph_convolution_3.conv_weights.2.bias"),
        (lambda m: m[3].update({"graph_convolution_3.extra": torch.zeros(1)}), "unexpected key t2i_match_G.graph_convolution_3.extra"),
    ],
)
def test_gsmn_keys_are_accounted_for(tmp_path, edit, named):
    words = release_words()
    modules = gsmn_modules(len(words))
    edit(modules)
    assert named in _conversion_error(tmp_path, modules, gsmn_options(len(words)), release="gsmn")


def test_gsmn_options_kgitm_cannot_honour_are_named(tmp_path):
    words = release_words()
    assert "option feat_dim=8" in _conversion_error(tmp_path, gsmn_modules(len(words)), gsmn_options(len(words), feat_dim=8), release="gsmn")
    assert "option out_dim=2" in _conversion_error(tmp_path, gsmn_modules(len(words)), gsmn_options(len(words), out_dim=2), release="gsmn")


def test_a_python2_vocabulary_pickle_reads(tmp_path):
    """The bytes of a Python 2 protocol-2 pickle of ``__main__.Vocabulary`` as VSE++/VSRN ship them
    (``U`` short byte strings, ``NEWOBJ`` + ``BUILD``; the layout of VSRN's vocab/f30k_precomp_vocab.pkl)."""

    def s(w: str) -> bytes:
        return b"U" + bytes([len(w)]) + w.encode()

    words = ["<pad>", "<start>", "<end>", "<unk>", "dog", "cat"]
    idx2word = b"".join(b"K" + bytes([i]) + s(w) for i, w in enumerate(words))
    word2idx = b"".join(s(w) + b"K" + bytes([i]) for i, w in enumerate(words))
    blob = (b"\x80\x02c__main__\nVocabulary\nq\x00)\x81q\x01}q\x02(" + s("idx2word") + b"q\x03}q\x04(" + idx2word + b"u"
            + s("word2idx") + b"q\x05}q\x06(" + word2idx + b"u" + s("idx") + b"K\x06ub.")
    path = tmp_path / "f30k_precomp_vocab.pkl"
    path.write_bytes(blob)
    assert read_release_vocabulary(path).words == words
