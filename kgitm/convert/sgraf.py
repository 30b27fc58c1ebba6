"""SGRAF (Diao et al., AAAI 2021; github.com/Paranioar/SGRAF, branch ``python3.6`` ``a19d1a9``) -> kgitm.

The checkpoint's ``model`` is ``[img_enc, txt_enc, sim_enc]``:

- ``img_enc``: ``fc.weight (D, D_in)``, ``fc.bias`` (l2 per region unless ``--no_imgnorm``).
- ``txt_enc``: ``embed.weight (V, F)``, ``cap_rnn.*`` GRU, bi-directional by default (``--bi_gru`` is
  ``store_false``), directions averaged, l2 per word unless ``--no_txtnorm``; its word dropout (0.4)
  acts in training only.
- ``sim_enc`` (``EncoderSimilarity``): ``v_global_w.embedding_local.{0: Linear (D, D), 1: BatchNorm1d(R)}``,
  ``v_global_w.embedding_global.{0, 1: BatchNorm1d(D)}``, ``v_global_w.embedding_common.0 (1, D)``,
  ``t_global_w.*`` (no batch norms), ``sim_tranloc_w``, ``sim_tranglo_w (K, D)``, ``sim_eval_w (1, K)``;
  SGR adds ``SGR_module.{i}.{graph_query_w, graph_key_w, sim_graph_w} (K, K)`` for ``--sgr_step`` steps,
  SAF ``SAF_module.attn_sim_w (1, K)`` and ``SAF_module.bn`` (``BatchNorm1d(1)``).

kgitm's :class:`~kgitm.matchers.sgraf.SGRAFMatcher` keeps ``EncoderSimilarity``'s parameter names, so
``sim_enc`` maps onto ``matcher.*`` key for key. The release's forward (``SCAN_attention`` with the
hard-coded ``smooth=9.0`` and LeakyReLU(0.1), the attended vectors l2-normalised, ``BatchNorm1d(36)``
over the region axis) is the matcher's; the region slots of that norm are read from its shape
(``num_regions``: 36 for the released models, whose images have exactly 36 regions in the detector's
order). The SGRAF of the paper's tables is the mean of an SAF and an SGR model's similarity matrices
(``kgitm ensemble``; ``docs/checkpoints.md``).
"""

from __future__ import annotations

from collections.abc import Iterable

from kgitm.convert.parts import (
    Conversion, check_vocab_size, gru_text_encoder, hinge_model, region_encoder, take_module,
)
from kgitm.convert.release import ReleaseCheckpoint, ReleaseFormatError, ReleaseVocabulary, open_release
from kgitm.matchers.sgraf import SGRAFMatcher

#: options of SGRAF's ``train.py`` (``opts.py``) that do not change the forward pass
TRAINING_OPTIONS = (
    "data_path", "vocab_path", "model_name", "logger_name", "batch_size", "num_epochs", "lr_update", "learning_rate",
    "workers", "log_step", "val_step", "grad_clip", "resume",
)
#: the release's hard-coded attention temperature (``SCAN_attention(..., smooth=9.0)``) and LeakyReLU slope
SMOOTH, LEAKY_SLOPE = 9.0, 0.1
#: the release's dropout of the self-attention poolings and of the word embeddings (training only)
DROPOUT = 0.4


def convert(checkpoint: ReleaseCheckpoint, vocab: ReleaseVocabulary, *, ignore_options: Iterable[str] = ()) -> Conversion:
    """An SGRAF (SAF or SGR, from ``opt.module_name``) checkpoint and its vocabulary as a kgitm model.

    Raises:
        ReleaseFormatError: a missing or unexpected key, a shape or option kgitm cannot honour (named).
    """
    src = checkpoint.path
    opt, (img, txt, sim) = open_release(
        checkpoint, "SGRAF", ("img_enc", "txt_enc", "sim_enc"), training_options=TRAINING_OPTIONS, ignore_options=ignore_options
    )

    module = opt.get("module_name", "SGR")
    if module not in ("SGR", "SAF"):
        raise opt.refuse("module_name", module, "SGRAF's EncoderSimilarity knows 'SGR' and 'SAF' (SGRAF itself is their ensemble)")
    embed_dim = int(opt.get("embed_size", 1024))
    word_dim = int(opt.get("word_dim", 300))
    feature_dim = int(opt.get("img_dim", 2048))
    num_layers = int(opt.get("num_layers", 1))
    sim_dim = int(opt.get("sim_dim", 256))
    sgr_step = int(opt.get("sgr_step", 3))
    bidirectional = bool(opt.get("bi_gru", True))  # store_false: on unless the command said --bi_gru
    normalize_images = not bool(opt.get("no_imgnorm", False))
    normalize_words = not bool(opt.get("no_txtnorm", False))
    margin = float(opt.get("margin", 0.2))
    max_violation = bool(opt.get("max_violation", True))  # store_false as well
    data_name = str(opt.get("data_name", "f30k_precomp"))
    check_vocab_size(opt, vocab)
    opt.finish()

    image_cfg, image_state = region_encoder(img, embed_dim=embed_dim, feature_dim=feature_dim, weight_norm=False, normalize=normalize_images)
    text_cfg, text_state, itos = gru_text_encoder(
        txt, vocab, word_dim=word_dim, embed_dim=embed_dim, num_layers=num_layers, bidirectional=bidirectional, rnn="cap_rnn"
    )
    text_cfg["init_args"]["normalize"] = normalize_words
    region_norm = "v_global_w.embedding_local.1.weight"
    slots = sim.peek(region_norm)
    if slots is None or slots.dim() != 1:
        raise ReleaseFormatError(f"{src}: missing key sim_enc.{region_norm} (VisualSA's BatchNorm1d over the region slots, shape (R,))")
    num_regions = int(slots.numel())
    reference = SGRAFMatcher(module, embed_dim=embed_dim, sim_dim=sim_dim, sgr_step=sgr_step, num_regions=num_regions)
    matcher_state = take_module(sim, reference, source="", target="matcher.")
    for state in (img, txt, sim):
        state.finish()

    matcher = {
        "class_path": "kgitm.matchers.sgraf.SGRAFMatcher",
        "init_args": {
            "module": module,
            "sim_dim": sim_dim,
            "sgr_step": sgr_step,
            "lambda_softmax": SMOOTH,
            "num_regions": num_regions,
            "dropout": DROPOUT,
            "leaky_relu_slope": LEAKY_SLOPE,
        },
    }
    model = hinge_model(
        embed_dim=embed_dim, image_cfg=image_cfg, text_cfg=text_cfg, matcher=matcher, margin=margin, max_violation=max_violation
    )
    used = {
        "module_name": module, "sim_dim": sim_dim, "sgr_step": sgr_step, "num_regions": num_regions, "bi_gru": bidirectional,
        "num_layers": num_layers, "no_imgnorm": not normalize_images, "no_txtnorm": not normalize_words, "embed_size": embed_dim,
        "word_dim": word_dim, "img_dim": feature_dim, "data_name": data_name, "margin": margin, "max_violation": max_violation,
    }
    return Conversion(
        release="sgraf", model=model, data={"data_name": data_name}, state_dict={**image_state, **text_state, **matcher_state},
        vocabulary=itos, feature_dim=feature_dim, options=used,
    )
