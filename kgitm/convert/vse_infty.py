"""VSE-infinity (Chen et al., CVPR 2021; github.com/woodfrog/vse_infty, branch ``bigru`` ``8600f89``) -> kgitm.

The region + Bi-GRU model's ``model`` is ``[img_enc, txt_enc]`` (keys with ``module.`` when saved after
``make_data_parallel()``; stripped on reading):

- ``img_enc`` (``EncoderImageAggr``, ``--precomp_enc_type basic``): ``fc.weight (D, D_in)``, ``fc.bias``;
  ``mlp.layers.0 (D/2, D_in)``, ``mlp.layers.1 (D, D/2)``, ``mlp.bns.0`` (``BatchNorm1d(D/2)``) and
  ``mlp.bns.1`` (``BatchNorm1d(D)``, created by ``MLP`` but never applied: read and dropped);
  ``gpool.gru.*`` (bi-GRU ``d_pe -> d_hidden``), ``gpool.linear.weight (1, d_hidden)``.
- ``txt_enc`` (``EncoderText``): ``embed.weight (V + 1, F)`` (SCAN's vocabulary with ``<mask>`` appended in
  code), ``rnn.*`` bi-GRU (always bi-directional, directions averaged), ``gpool.*``.

The forward (``lib/encoders.py``): image ``l2(GPO(fc(x) + MLP(x)))``, caption ``l2(GPO(GRU))``, score the
dot product. kgitm: :class:`~kgitm.encoders.image.RegionEncoder` with ``residual_mlp`` and no per-region
l2, :class:`~kgitm.encoders.text.BiGRUTextEncoder` without per-word l2, and
:class:`~kgitm.matchers.global_embedding.GlobalEmbeddingMatcher` with ``pooling="gpo"`` (``img_enc.gpool``
-> ``matcher.image_pool``, ``txt_enc.gpool`` -> ``matcher.caption_pool``). The ``<mask>`` row is kept
(``<mask>`` is the last word of ``vocab.txt``); no caption token maps to it.

The BERT text encoder (branch ``master``: ``txt_enc.bert.*``, ``txt_enc.linear``) and the grid/backbone
image encoder (``--precomp_enc_type backbone``, ``img_enc.backbone.*``) are refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from kgitm.convert.parts import (
    Conversion, check_vocab_size, gru_text_encoder, hinge_model, region_encoder, take_module,
)
from kgitm.convert.release import ModuleState, ReleaseCheckpoint, ReleaseFormatError, ReleaseVocabulary, open_release
from kgitm.encoders.image import RegionMLP
from kgitm.encoders.pooling import GPO

#: options of VSE-infinity's ``arguments.py`` that do not change the forward pass of a region model
TRAINING_OPTIONS = (
    "data_path", "vocab_path", "num_epochs", "batch_size", "grad_clip", "learning_rate", "lr_update", "optim", "workers",
    "log_step", "val_step", "logger_name", "model_name", "resume", "reset_start_epoch",
    "drop",  # the training-time size augmentation (regions dropped, words masked)
    # the backbone's schedule; a precomp_enc_type basic model has no backbone
    "backbone_path", "backbone_source", "backbone_warmup_epochs", "embedding_warmup_epochs", "backbone_lr_factor", "input_scale_factor",
)
#: the word ``vse_infty``'s ``evaluation.py`` / ``train.py`` append to SCAN's vocabulary (``vocab.add_word('<mask>')``)
MASK = "<mask>"
#: GPO's softmax temperature, hard-coded in the release (``torch.softmax(scores / 0.1, 1)``)
GPO_TEMPERATURE = 0.1


def _refuse_other_variants(img: ModuleState, txt: ModuleState, src) -> None:
    bert = [k for k in txt.keys() if k.startswith("bert.")]
    if bert:
        raise ReleaseFormatError(
            f"{src}: key txt_enc.{bert[0]}: a VSE-infinity BERT text encoder (branch master); kgitm converts the "
            "bigru variant only (f30k/coco_butd_region_bigru)"
        )
    backbone = [k for k in img.keys() if k.startswith("backbone.") or k.startswith("image_encoder.")]
    if backbone:
        raise ReleaseFormatError(
            f"{src}: key img_enc.{backbone[0]}: a VSE-infinity grid/backbone image encoder (precomp_enc_type backbone); "
            "kgitm converts the region model (precomp_enc_type basic) only"
        )


def _gpo_sizes(state: ModuleState, src) -> tuple[int, int]:
    w = state.peek("gpool.gru.weight_ih_l0")
    if w is None or w.dim() != 2:
        raise ReleaseFormatError(f"{src}: missing key {state.name}.gpool.gru.weight_ih_l0 (the GPO's bi-GRU)")
    return int(w.shape[1]), int(w.shape[0]) // 3


def convert(checkpoint: ReleaseCheckpoint, vocab: ReleaseVocabulary, *, ignore_options: Iterable[str] = ()) -> Conversion:
    """A VSE-infinity region + Bi-GRU checkpoint and its vocabulary (SCAN's json) as a kgitm model.

    Raises:
        ReleaseFormatError: a missing or unexpected key, a shape or option kgitm cannot honour (named).
    """
    src = checkpoint.path
    opt, (img, txt) = open_release(
        checkpoint, "VSE-infinity", ("img_enc", "txt_enc"), training_options=TRAINING_OPTIONS, ignore_options=ignore_options
    )
    _refuse_other_variants(img, txt, src)

    enc_type = opt.get("precomp_enc_type", "basic")
    if enc_type != "basic":
        raise opt.refuse("precomp_enc_type", enc_type, "kgitm converts the region model (basic: fc + MLP over precomputed features) only")
    no_imgnorm, no_txtnorm = bool(opt.get("no_imgnorm", False)), bool(opt.get("no_txtnorm", False))
    if no_imgnorm != no_txtnorm:
        raise opt.refuse("no_imgnorm" if no_imgnorm else "no_txtnorm", True,
                         "kgitm's GlobalEmbeddingMatcher l2-normalises both pooled sides or neither")
    embed_dim = int(opt.get("embed_size", 1024))
    word_dim = int(opt.get("word_dim", 300))
    feature_dim = int(opt.get("img_dim", 2048))
    num_layers = int(opt.get("num_layers", 1))
    margin = float(opt.get("margin", 0.2))
    max_violation = bool(opt.get("max_violation", False))
    warmup = int(opt.get("vse_mean_warmup_epochs", 0))
    data_name = str(opt.get("data_name", "precomp"))

    words = list(vocab.words)
    appended = MASK not in words
    if appended:
        words.append(MASK)  # as the release does after reading the json
    vocab = type(vocab)(vocab.path, words)
    check_vocab_size(opt, vocab, appended=MASK if appended else None)
    opt.finish()

    image_cfg, image_state = region_encoder(img, embed_dim=embed_dim, feature_dim=feature_dim, weight_norm=False, normalize=False)
    hidden = img.peek("mlp.layers.0.weight")
    if hidden is None:
        raise ReleaseFormatError(f"{src}: missing key img_enc.mlp.layers.0.weight (the precomp MLP of precomp_enc_type basic)")
    mlp = RegionMLP(feature_dim, int(hidden.shape[0]), embed_dim, num_layers=2)
    image_state.update(take_module(img, mlp, source="mlp.", target="image_encoder.mlp."))
    take_module(img, nn.BatchNorm1d(embed_dim), source="mlp.bns.1.", target="")  # MLP creates it and never applies it: dropped
    image_cfg["init_args"].update(residual_mlp=True, mlp_hidden_dim=int(hidden.shape[0]), mlp_layers=2)

    text_cfg, text_state, itos = gru_text_encoder(
        txt, vocab, word_dim=word_dim, embed_dim=embed_dim, num_layers=num_layers, bidirectional=True
    )
    text_cfg["init_args"]["normalize"] = False
    pe_dim, gpo_hidden = _gpo_sizes(img, src)
    if _gpo_sizes(txt, src) != (pe_dim, gpo_hidden):
        raise ReleaseFormatError(f"{src}: img_enc.gpool and txt_enc.gpool have different sizes")
    pool_state = {
        **take_module(img, GPO(pe_dim, gpo_hidden), source="gpool.", target="matcher.image_pool."),
        **take_module(txt, GPO(pe_dim, gpo_hidden), source="gpool.", target="matcher.caption_pool."),
    }
    img.finish()
    txt.finish()

    matcher = {
        "class_path": "kgitm.matchers.global_embedding.GlobalEmbeddingMatcher",
        "init_args": {"pooling": "gpo", "gpo_pe_dim": pe_dim, "gpo_hidden_dim": gpo_hidden, "gpo_temperature": GPO_TEMPERATURE,
                      "normalize": not no_imgnorm},
    }
    model = hinge_model(
        embed_dim=embed_dim, image_cfg=image_cfg, text_cfg=text_cfg, matcher=matcher, margin=margin, max_violation=max_violation,
        warmup_epochs=warmup,
    )
    used = {
        "precomp_enc_type": enc_type, "no_imgnorm": no_imgnorm, "no_txtnorm": no_txtnorm, "embed_size": embed_dim, "word_dim": word_dim,
        "img_dim": feature_dim, "num_layers": num_layers, "mlp_hidden": int(hidden.shape[0]), "gpo_pe_dim": pe_dim,
        "gpo_hidden_dim": gpo_hidden, "data_name": data_name, "margin": margin, "max_violation": max_violation,
        "vse_mean_warmup_epochs": warmup, "mask_word_appended": appended,
    }
    return Conversion(
        release="vse_infty", model=model, data={"data_name": data_name}, state_dict={**image_state, **text_state, **pool_state},
        vocabulary=itos, feature_dim=feature_dim, options=used,
    )
