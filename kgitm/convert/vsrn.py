"""VSRN (Li et al., ICCV 2019; github.com/KunpengLi1994/VSRN ``777ae74``) -> kgitm.

The checkpoint's ``model`` is ``[img_enc, txt_enc]`` (the captioning branch, ``caption_model``, is not
saved; its options are read and ignored):

- ``img_enc`` (``EncoderImagePrecompAttn``): ``fc.weight (D, D_in)``, ``fc.bias``;
  ``Rs_GCN_{1..4}.{g, theta, phi}.{weight (D, D, 1), bias}``, ``Rs_GCN_k.W.0`` (Conv1d), ``Rs_GCN_k.W.1``
  (``BatchNorm1d(D)``); ``img_rnn.*`` uni-directional GRU ``D -> D``; ``bn`` (``BatchNorm1d(D)``) **only
  when** ``data_name == 'f30k_precomp'``.
- ``txt_enc``: ``embed.weight (V, F)``, ``rnn.*`` uni-directional GRU ``F -> D``.

The forward (``model.py``): ``fc`` (+ ``l2norm``, every dataset but ``f30k_precomp``), four residual GCN
layers, ``l2norm``, the GRU's last hidden state over the 36 regions, ``bn`` (``f30k_precomp`` only), l2
(unless ``--no_imgnorm``); the caption is l2 of the GRU output at its last word; the score a dot product.
The release's ``l2norm`` sums over ``dim=1``: for the ``(B, 36, D)`` regions that is the region axis, and
kgitm's :class:`~kgitm.encoders.reasoning.VSRNImageEncoder` computes it so (``norm_axis: regions``).

The published numbers average the similarity matrices of two models (``evaluation_models.py``:
``(d + d2) / 2``): convert both and use ``kgitm ensemble``.
"""

from __future__ import annotations

from collections.abc import Iterable

from kgitm.convert.parts import (
    Conversion, check_vocab_size, gru_text_encoder, hinge_model, refuse_full_image, refuse_order_embeddings, take_module,
)
from kgitm.convert.release import ReleaseCheckpoint, ReleaseVocabulary, open_release
from kgitm.encoders.reasoning import VSRNImageEncoder

#: options of VSRN's ``train.py`` that do not change the matching forward pass
TRAINING_OPTIONS = (
    "data_path", "vocab_path", "num_epochs", "batch_size", "grad_clip", "crop_size", "learning_rate", "lr_update",
    "workers", "log_step", "val_step", "logger_name", "resume", "use_restval", "reset_train",
    "finetune", "cnn_type",  # the CNN of full-image runs; a precomp model has none
    # the captioning branch (S2VT decoder), trained beside the matching model and not saved
    "dim_vid", "dim_hidden", "input_dropout_p", "rnn_type", "rnn_dropout_p", "dim_word", "max_len", "bidirectional",
)
#: the dataset whose model has the final batch norm and no l2 after the projection (``model.py``)
F30K = "f30k_precomp"
GCN_LAYERS = 4
IMAGE_ENCODER = "kgitm.encoders.reasoning.VSRNImageEncoder"


def convert(checkpoint: ReleaseCheckpoint, vocab: ReleaseVocabulary, *, ignore_options: Iterable[str] = ()) -> Conversion:
    """A VSRN precomp checkpoint and its vocabulary (the release's pickle) as a kgitm model.

    Raises:
        ReleaseFormatError: a missing or unexpected key, a shape or option kgitm cannot honour (named).
    """
    opt, (img, txt) = open_release(
        checkpoint, "VSRN", ("img_enc", "txt_enc"), training_options=TRAINING_OPTIONS, ignore_options=ignore_options
    )

    data_name = refuse_full_image(opt, img, release="VSRN")
    measure = refuse_order_embeddings(opt)
    normalize = not bool(opt.get("no_imgnorm", False))
    embed_dim = int(opt.get("embed_size", 2048))
    word_dim = int(opt.get("word_dim", 300))
    feature_dim = int(opt.get("img_dim", 2048))
    num_layers = int(opt.get("num_layers", 1))
    margin = float(opt.get("margin", 0.2))
    max_violation = bool(opt.get("max_violation", False))
    check_vocab_size(opt, vocab)
    opt.finish()

    f30k = data_name == F30K
    init_args = {"num_layers": GCN_LAYERS, "normalize_projection": not f30k, "norm_axis": "regions", "final_batch_norm": f30k,
                 "normalize": normalize}
    reference = VSRNImageEncoder(feature_dim, embed_dim, **init_args)
    image_state = take_module(img, reference.fc, source="fc.", target="image_encoder.fc.")
    for k in range(GCN_LAYERS):
        image_state.update(take_module(img, reference.gcn[k], source=f"Rs_GCN_{k + 1}.", target=f"image_encoder.gcn.{k}."))
    image_state.update(take_module(img, reference.gru, source="img_rnn.", target="image_encoder.gru."))
    if reference.bn is not None:
        image_state.update(take_module(img, reference.bn, source="bn.", target="image_encoder.bn."))
    text_cfg, text_state, itos = gru_text_encoder(
        txt, vocab, word_dim=word_dim, embed_dim=embed_dim, num_layers=num_layers, bidirectional=False
    )
    img.finish()
    txt.finish()

    matcher = {
        "class_path": "kgitm.matchers.global_embedding.GlobalEmbeddingMatcher",
        "init_args": {"pooling": "mean", "caption_pooling": "last", "normalize": normalize},
    }
    model = hinge_model(
        embed_dim=embed_dim, image_cfg={"class_path": IMAGE_ENCODER, "init_args": init_args}, text_cfg=text_cfg, matcher=matcher, margin=margin,
        max_violation=max_violation,
    )
    used = {
        "data_name": data_name, "measure": measure, "use_abs": False, "no_imgnorm": not normalize, "embed_size": embed_dim,
        "word_dim": word_dim, "img_dim": feature_dim, "num_layers": num_layers, "gcn_layers": GCN_LAYERS,
        "final_batch_norm": f30k, "normalize_projection": not f30k, "margin": margin, "max_violation": max_violation,
    }
    return Conversion(
        release="vsrn", model=model, data={"data_name": data_name}, state_dict={**image_state, **text_state},
        vocabulary=itos, feature_dim=feature_dim, options=used,
    )
