"""GSMN (Liu et al., CVPR 2020; github.com/CrossmodalGroup/GSMN ``dcc0f61``) -> kgitm.

The checkpoint's ``model`` is ``[img_enc, txt_enc, i2t_match_G, t2i_match_G]``:

- ``img_enc``, ``txt_enc``: as SCAN's (``fc``; ``embed`` + ``rnn``, bi-directional with ``--bi_gru``).
- ``i2t_match_G`` (``VisualGraph``): ``graph_convolution_1.{mean_rho, mean_theta, precision_rho,
  precision_theta} (K, 1)``, ``graph_convolution_1.conv_weights.{k}.weight (H/K, B)`` (no bias);
  ``out_1.weight_g (H, 1)``, ``out_1.weight_v (H, H)``, ``out_1.bias``, ``out_2.weight_g (1, 1)``,
  ``out_2.weight_v (1, H)``, ``out_2.bias`` (``nn.utils.weight_norm``, one norm per output row).
- ``t2i_match_G`` (``TextualGraph``): ``graph_convolution_3.params (K, 1)``,
  ``graph_convolution_3.conv_weights.{k}.{weight (H/K, B), bias (H/K,)}``, ``out_1``, ``out_2`` as above.

The release's forward (``graph_model.py``, ``layers.py``) is not the paper's: every edge carries the
node's own matching vector, so the visual convolution is :math:`\\Vert_k W_k x_i \\sum_j w_k(u_{ij})`
and the textual one :math:`\\Vert_k (W_k x_i + b_k)` (its edge weights times ``params`` are
normalised over the neighbours, so ``params`` and the graph, dense or ``--is_sparse``, cancel out).
kgitm's :class:`~kgitm.matchers.gsmn.GSMNMatcher` computes it with ``messages="own"`` and
``text_conv_bias=True``; ``params`` is read and dropped.

The visual kernels keep the release's conventions. Its pseudo-coordinate angle is
``atan2(x_i - x_j, y_i - y_j)``, not kgitm's ``atan2(y_j - y_i, x_j - x_i)`` (``-phi - pi/2`` of it, but
0 for a region and itself, so no change of the kernels' means can stand for it): the matcher computes
the release's (``angle_convention: gsmn_release``). The released models were trained on boxes scaled
x by the image *height* and y by its *width* (``data.py`` before ``dcc0f61``); the config asks for the
same (``data.box_normalization: gsmn_release``).

Captions are read as the release reads them: ``{split}_precaps_stan.txt``, comma-separated ids of the
vocabulary (``data.tokenizer: ids``, the release's words in ``release_vocab.txt``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from kgitm.convert.parts import Conversion, check_vocab_size, gru_text_encoder, hinge_model, region_encoder
from kgitm.convert.release import (
    ModuleState,
    ReleaseCheckpoint,
    ReleaseFormatError,
    ReleaseVocabulary,
    fold_weight_norm,
    open_release,
)

#: options of GSMN's ``train.py`` that do not change the forward pass
TRAINING_OPTIONS = (
    "data_path", "vocab_path", "num_epochs", "batch_size", "grad_clip", "learning_rate", "lr_update", "workers",
    "log_step", "val_step", "logger_name", "model_name", "resume",
    "is_sparse",  # the release's textual convolution normalises its edge weights away: dense and sparse compute the same
)


def _kernel_count(state: ModuleState, prefix: str) -> int:
    ks = {int(k[len(prefix):].split(".")[0]) for k in state.keys() if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()}
    if not ks or sorted(ks) != list(range(len(ks))):
        raise ReleaseFormatError(f"{state.source}: missing key {state.name}.{prefix}0.weight (the graph convolution's kernels)")
    return len(ks)


def _mlp(state: ModuleState, prefix: str, hidden: int) -> dict[str, torch.Tensor]:
    out = {}
    for release, ours, shape in (("out_1", "0", (hidden, hidden)), ("out_2", "2", (1, hidden))):
        weight = fold_weight_norm(state, release, dim=0)
        if weight is None:
            weight = state.take(f"{release}.weight")
        if tuple(weight.shape) != shape:
            raise ReleaseFormatError(f"{state.source}: {state.name}.{release} weight has shape {tuple(weight.shape)}, expected {shape}")
        out[f"matcher.{prefix}.{ours}.weight"] = weight.float()
        out[f"matcher.{prefix}.{ours}.bias"] = state.take(f"{release}.bias", (shape[0],)).float()
    return out


def convert(checkpoint: ReleaseCheckpoint, vocab: ReleaseVocabulary, *, ignore_options: Iterable[str] = ()) -> Conversion:
    """A GSMN checkpoint and its vocabulary as a kgitm model (``GSMNMatcher(messages="own")``).

    Raises:
        ReleaseFormatError: a missing or unexpected key, a shape or option kgitm cannot honour (named).
    """
    src = checkpoint.path
    opt, (img, txt, vis, tex) = open_release(
        checkpoint, "GSMN", ("img_enc", "txt_enc", "i2t_match_G", "t2i_match_G"),
        training_options=TRAINING_OPTIONS, ignore_options=ignore_options,
    )

    embed_dim = int(opt.get("embed_size", 1024))
    word_dim = int(opt.get("word_dim", 300))
    feature_dim = int(opt.get("img_dim", 2048))
    num_layers = int(opt.get("num_layers", 1))
    bidirectional = bool(opt.get("bi_gru", False))
    for flag in ("no_imgnorm", "no_txtnorm"):
        if opt.get(flag, False):
            raise opt.refuse(flag, True, "kgitm's GSMN attends with cosines, the same as the release's dot products only of "
                             "l2-normalised features")
    num_blocks = int(opt.get("num_block", 16))
    feat_dim = int(opt.get("feat_dim", 16))
    if feat_dim != num_blocks:
        raise opt.refuse("feat_dim", feat_dim, f"the graph convolutions read the {num_blocks}-d multi-block matching vectors (num_block); they must be equal")
    if embed_dim % num_blocks:
        raise opt.refuse("num_block", num_blocks, f"must divide embed_size {embed_dim}")
    hidden = int(opt.get("hid_dim", 32))
    out_dim = int(opt.get("out_dim", 1))
    if out_dim != 1:
        raise opt.refuse("out_dim", out_dim, "kgitm's GSMN scores each node with one number (the release's default 1)")
    lambda_softmax = float(opt.get("lambda_softmax", 9.0))
    margin = float(opt.get("margin", 0.2))
    max_violation = bool(opt.get("max_violation", False))
    data_name = str(opt.get("data_name", "precomp"))
    check_vocab_size(opt, vocab)
    opt.finish()

    image_cfg, image_state = region_encoder(img, embed_dim=embed_dim, feature_dim=feature_dim, weight_norm=False, normalize=True)
    text_cfg, text_state, itos = gru_text_encoder(
        txt, vocab, word_dim=word_dim, embed_dim=embed_dim, num_layers=num_layers, bidirectional=bidirectional
    )

    k = _kernel_count(vis, "graph_convolution_1.conv_weights.")
    if _kernel_count(tex, "graph_convolution_3.conv_weights.") != k:
        raise ReleaseFormatError(f"{src}: i2t_match_G and t2i_match_G have different kernel counts")
    if hidden % k:
        raise opt.refuse("hid_dim", hidden, f"must be divisible by the {k} kernels")
    gc = "graph_convolution_1."
    mean_rho, mean_theta, prec_rho, prec_theta = (vis.take(gc + n, (k, 1))[:, 0] for n in ("mean_rho", "mean_theta", "precision_rho", "precision_theta"))
    matcher_state = {
        # radians, as kgitm's release-style kernels; the widths are squared by both
        "matcher.kernel_mean": torch.stack([mean_rho, mean_theta], -1).float(),
        "matcher.kernel_width": torch.stack([prec_rho, prec_theta], -1).float(),
        "matcher.visual_conv.weight": torch.cat([vis.take(f"{gc}conv_weights.{i}.weight", (hidden // k, num_blocks)) for i in range(k)]).float(),
        "matcher.text_conv.weight": torch.cat(
            [tex.take(f"graph_convolution_3.conv_weights.{i}.weight", (hidden // k, num_blocks)) for i in range(k)]
        ).float(),
        "matcher.text_conv.bias": torch.cat([tex.take(f"graph_convolution_3.conv_weights.{i}.bias", (hidden // k,)) for i in range(k)]).float(),
        **_mlp(vis, "visual_mlp", hidden),
        **_mlp(tex, "text_mlp", hidden),
    }
    tex.take("graph_convolution_3.params", (k, 1))  # cancels out of the release's forward (see the module docstring)
    for state in (img, txt, vis, tex):
        state.finish()

    matcher = {
        "class_path": "kgitm.matchers.gsmn.GSMNMatcher",
        "init_args": {
            "graph": "dense",  # the release's propagation reads no graph (is_sparse changes nothing)
            "num_blocks": num_blocks,
            "num_kernels": k,
            "lambda_attention": lambda_softmax,
            "kernel_style": "release",
            "structure_dim": hidden,
            "mlp_dim": hidden,
            "messages": "own",
            "text_conv_bias": True,
            "angle_convention": "gsmn_release",
        },
    }
    model = hinge_model(
        embed_dim=embed_dim, image_cfg=image_cfg, text_cfg=text_cfg, matcher=matcher, margin=margin, max_violation=max_violation
    )
    data = {
        "data_name": data_name,
        "captions_suffix": "precaps_stan.txt",
        "tokenizer": "ids",
        "boundary_tokens": False,
        "box_normalization": "gsmn_release",
        "require_boxes": True,
    }
    used = {
        "lambda_softmax": lambda_softmax, "num_block": num_blocks, "feat_dim": feat_dim, "hid_dim": hidden, "out_dim": out_dim,
        "kernels": k, "bi_gru": bidirectional, "num_layers": num_layers, "embed_size": embed_dim, "word_dim": word_dim,
        "img_dim": feature_dim, "data_name": data_name, "is_sparse": bool(checkpoint.options.get("is_sparse", False)),
        "margin": margin, "max_violation": max_violation,
    }
    return Conversion(
        release="gsmn", model=model, data=data, state_dict={**image_state, **text_state, **matcher_state},
        vocabulary=itos, feature_dim=feature_dim, options=used, id_words=list(vocab.words),
    )
