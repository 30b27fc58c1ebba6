"""SCAN (Lee et al., ECCV 2018; github.com/kuanghuei/SCAN ``8063557``) -> kgitm.

The checkpoint's ``model`` is ``[img_enc, txt_enc]``:

- ``img_enc``: ``fc.weight (D, D_in)``, ``fc.bias (D,)``; with ``--precomp_enc_type weight_norm``
  ``fc.weight_g`` (a scalar: ``weight_norm(dim=None)``) and ``fc.weight_v`` instead of ``fc.weight``.
- ``txt_enc``: ``embed.weight (V, F)``; ``rnn.{weight_ih,weight_hh,bias_ih,bias_hh}_l{k}[_reverse]``,
  a GRU of ``--num_layers`` layers, bi-directional with ``--bi_gru`` (directions averaged).

The forward (``model.py``): regions ``l2(fc(x))``, words ``l2(GRU)``; cross attention of words over
regions (``--cross_attn t2i``) or regions over words (``i2t``) with ``LeakyReLU(0.1)`` + l2 over the
query axis (``--raw_feature_norm clipped_l2norm``; ``l2norm`` is the same without the clipping),
``softmax(lambda_softmax * .)`` over the context, relevance ``cos(query, attended)``, pooled by
``--agg_func`` LogSumExp (``lambda_lse``), Mean, Max or Sum. kgitm's
:class:`~kgitm.matchers.scan.SCANMatcher` computes the same (its attention logits are the cosines;
the release's are dot products of l2-normalised vectors, the same numbers), so ``--no_imgnorm`` and
``--no_txtnorm`` (dot products of un-normalised vectors) and the other ``raw_feature_norm`` modes are
refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from kgitm.convert.parts import Conversion, check_vocab_size, gru_text_encoder, hinge_model, region_encoder
from kgitm.convert.release import (
    ReleaseCheckpoint,
    ReleaseVocabulary,
    open_release,
)

#: ``--raw_feature_norm`` modes kgitm computes, as the LeakyReLU slope before the l2 over the query axis
RAW_FEATURE_NORM_SLOPE = {"clipped_l2norm": 0.1, "l2norm": 1.0}
#: ``--agg_func`` -> :class:`~kgitm.matchers.scan.SCANMatcher` ``aggregation``
AGGREGATION = {"LogSumExp": "lse", "Mean": "mean", "Max": "max", "Sum": "sum"}
#: options of SCAN's ``train.py`` that do not change the forward pass (paths, schedule, logging)
TRAINING_OPTIONS = (
    "data_path", "vocab_path", "num_epochs", "batch_size", "grad_clip", "learning_rate", "lr_update", "workers",
    "log_step", "val_step", "logger_name", "model_name", "resume",
)


def convert(checkpoint: ReleaseCheckpoint, vocab: ReleaseVocabulary, *, ignore_options: Iterable[str] = ()) -> Conversion:
    """A SCAN checkpoint and its vocabulary as a kgitm model (``SCANMatcher``).

    Raises:
        ReleaseFormatError: a missing or unexpected key, a shape or option kgitm cannot honour (named).
    """
    opt, (img, txt) = open_release(
        checkpoint, "SCAN", ("img_enc", "txt_enc"), training_options=TRAINING_OPTIONS, ignore_options=ignore_options
    )

    embed_dim = int(opt.get("embed_size", 1024))
    word_dim = int(opt.get("word_dim", 300))
    feature_dim = int(opt.get("img_dim", 2048))
    num_layers = int(opt.get("num_layers", 1))
    bidirectional = bool(opt.get("bi_gru", False))
    enc_type = opt.get("precomp_enc_type", "basic")
    if enc_type not in ("basic", "weight_norm"):
        raise opt.refuse("precomp_enc_type", enc_type, "SCAN knows 'basic' and 'weight_norm'")
    for flag in ("no_imgnorm", "no_txtnorm"):
        if opt.get(flag, False):
            raise opt.refuse(flag, True, "kgitm's SCAN attends with cosines, the same as the release's dot products only of "
                             "l2-normalised features; a model trained without the normalisation cannot be converted exactly")
    raw_norm = opt.get("raw_feature_norm", "clipped_l2norm")
    if raw_norm not in RAW_FEATURE_NORM_SLOPE:
        raise opt.refuse("raw_feature_norm", raw_norm, f"kgitm's SCAN computes {' and '.join(RAW_FEATURE_NORM_SLOPE)} only")
    agg = opt.get("agg_func", "LogSumExp")
    if agg not in AGGREGATION:
        raise opt.refuse("agg_func", agg, f"SCAN knows {', '.join(AGGREGATION)}")
    direction = opt.get("cross_attn", "t2i")
    if direction not in ("t2i", "i2t"):
        raise opt.refuse("cross_attn", direction, "SCAN knows 't2i' and 'i2t'")
    lambda_softmax = float(opt.get("lambda_softmax", 9.0))
    lambda_lse = float(opt.get("lambda_lse", 6.0))
    margin = float(opt.get("margin", 0.2))
    max_violation = bool(opt.get("max_violation", False))
    data_name = str(opt.get("data_name", "precomp"))
    check_vocab_size(opt, vocab)
    opt.finish()

    image_cfg, image_state = region_encoder(img, embed_dim=embed_dim, feature_dim=feature_dim, weight_norm=enc_type == "weight_norm", normalize=True)
    text_cfg, text_state, itos = gru_text_encoder(
        txt, vocab, word_dim=word_dim, embed_dim=embed_dim, num_layers=num_layers, bidirectional=bidirectional
    )
    img.finish()
    txt.finish()
    matcher = {
        "class_path": "kgitm.matchers.scan.SCANMatcher",
        "init_args": {
            "direction": direction,
            "lambda_softmax": lambda_softmax,
            "aggregation": AGGREGATION[agg],
            "lambda_lse": lambda_lse,
            "leaky_relu_slope": RAW_FEATURE_NORM_SLOPE[raw_norm],
        },
    }
    model = hinge_model(
        embed_dim=embed_dim, image_cfg=image_cfg, text_cfg=text_cfg, matcher=matcher, margin=margin, max_violation=max_violation
    )
    used = {
        "cross_attn": direction, "agg_func": agg, "lambda_softmax": lambda_softmax, "lambda_lse": lambda_lse,
        "raw_feature_norm": raw_norm, "precomp_enc_type": enc_type, "bi_gru": bidirectional, "num_layers": num_layers,
        "embed_size": embed_dim, "word_dim": word_dim, "img_dim": feature_dim, "data_name": data_name,
        "margin": margin, "max_violation": max_violation,
    }
    return Conversion(
        release="scan", model=model, data={"data_name": data_name}, state_dict={**image_state, **text_state},
        vocabulary=itos, feature_dim=feature_dim, options=used,
    )
