"""VSE++ (Faghri et al., BMVC 2018; github.com/fartashf/vsepp ``abe382f``, ``python3``) -> kgitm.

The checkpoint's ``model`` is ``[img_enc, txt_enc]``:

- ``img_enc``: ``fc.weight (D, D_in)``, ``fc.bias (D,)`` over one precomputed vector per image
  (``{split}_ims.npy`` of shape ``(N, D_in)``, 4096-d by default); full-image runs add ``cnn.*``,
  which kgitm does not run (refused).
- ``txt_enc``: ``embed.weight (V, F)``; ``rnn.*``, a uni-directional GRU of ``--num_layers`` layers.

The forward (``model.py``): image ``l2(fc(x))`` (no l2 with ``--no_imgnorm``), caption ``l2`` of the GRU
output at the last word (``<end>``), score the dot product (``--measure cosine``). kgitm: a
:class:`~kgitm.encoders.image.RegionEncoder` over the single region, a uni-directional
:class:`~kgitm.encoders.text.BiGRUTextEncoder` and a
:class:`~kgitm.matchers.global_embedding.GlobalEmbeddingMatcher` with ``caption_pooling="last"``.
Order embeddings (``--measure order``, ``--use_abs``) are refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from kgitm.convert.parts import (
    Conversion, check_vocab_size, gru_text_encoder, hinge_model, refuse_full_image, refuse_order_embeddings, region_encoder,
)
from kgitm.convert.release import (
    ReleaseCheckpoint,
    ReleaseVocabulary,
    open_release,
)

#: options of VSE++'s ``train.py`` that do not change the forward pass of a precomp model
TRAINING_OPTIONS = (
    "data_path", "vocab_path", "num_epochs", "batch_size", "grad_clip", "crop_size", "learning_rate", "lr_update",
    "workers", "log_step", "val_step", "logger_name", "resume", "use_restval", "reset_train",
    "finetune", "cnn_type",  # the CNN of full-image runs; a precomp model has none
)


def convert(checkpoint: ReleaseCheckpoint, vocab: ReleaseVocabulary, *, ignore_options: Iterable[str] = ()) -> Conversion:
    """A VSE++ precomp checkpoint and its vocabulary as a kgitm model (``GlobalEmbeddingMatcher``).

    Raises:
        ReleaseFormatError: a missing or unexpected key, a shape or option kgitm cannot honour (named).
    """
    opt, (img, txt) = open_release(
        checkpoint, "VSE++", ("img_enc", "txt_enc"), training_options=TRAINING_OPTIONS, ignore_options=ignore_options
    )

    data_name = refuse_full_image(opt, img, release="VSE++")
    measure = refuse_order_embeddings(opt)
    normalize = not bool(opt.get("no_imgnorm", False))
    embed_dim = int(opt.get("embed_size", 1024))
    word_dim = int(opt.get("word_dim", 300))
    feature_dim = int(opt.get("img_dim", 4096))
    num_layers = int(opt.get("num_layers", 1))
    margin = float(opt.get("margin", 0.2))
    max_violation = bool(opt.get("max_violation", False))
    check_vocab_size(opt, vocab)
    opt.finish()

    image_cfg, image_state = region_encoder(img, embed_dim=embed_dim, feature_dim=feature_dim, weight_norm=False, normalize=normalize)
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
        embed_dim=embed_dim, image_cfg=image_cfg, text_cfg=text_cfg, matcher=matcher, margin=margin,
        max_violation=max_violation,
    )
    used = {
        "data_name": data_name, "measure": measure, "use_abs": False, "no_imgnorm": not normalize, "embed_size": embed_dim,
        "word_dim": word_dim, "img_dim": feature_dim, "num_layers": num_layers, "margin": margin, "max_violation": max_violation,
    }
    return Conversion(
        release="vsepp", model=model, data={"data_name": data_name}, state_dict={**image_state, **text_state},
        vocabulary=itos, feature_dim=feature_dim, options=used,
    )
