"""What the releases share, converted once: the region projection, the (Bi-)GRU text encoder, the
options every release reads alike (its vocabulary size, order embeddings refused), the model group of a
hinge-trained release, and the result of a conversion (:class:`Conversion`).

Every release's image side is a linear projection of precomputed features (optionally weight-normed)
and its text side a word embedding + GRU; the converters of :mod:`kgitm.convert` call
:func:`region_encoder` and :func:`gru_text_encoder` for them and add their matcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn

from kgitm.convert.release import ModuleState, ReleaseFormatError, ReleaseOptions, ReleaseVocabulary, fold_weight_norm

__all__ = [
    "Conversion", "check_vocab_size", "gru_text_encoder", "hinge_model", "refuse_full_image", "refuse_order_embeddings",
    "region_encoder", "take_module",
]

REGION_ENCODER = "kgitm.encoders.image.RegionEncoder"
GRU_TEXT_ENCODER = "kgitm.encoders.text.BiGRUTextEncoder"
HINGE_LOSS = "kgitm.models.losses.RetrievalHinge"


@dataclass
class Conversion:
    """A released model in kgitm's terms.

    Attributes:
        release: the release's name (``scan``, ``vsepp``).
        model: the config's ``model`` group (``embed_dim``, ``image_encoder``, ``text_encoder``,
            ``matcher``, ``loss`` as ``class_path``/``init_args``), without the sizes linked from the data
            (``feature_dim``, ``vocab_size``, ``vocab_words``).
        data: the config's ``data`` group entries the release fixes (tokenisation, captions per image).
        state_dict: the :class:`~kgitm.models.MatchingModel` state dict.
        vocabulary: kgitm's vocabulary (``itos``; padding and unknown first).
        feature_dim: the image feature size ``D_in`` the release was trained on.
        options: the release options that made the config, for the provenance record.
        id_words: the release's words in its id order, when its captions come as ids
            (``data.tokenizer: ids``; written as ``release_vocab.txt``), else ``None``.
    """

    release: str
    model: dict[str, Any]
    data: dict[str, Any]
    state_dict: dict[str, Tensor]
    vocabulary: list[str]
    feature_dim: int
    options: dict[str, Any] = field(default_factory=dict)
    id_words: Optional[list[str]] = None


def region_encoder(state: ModuleState, *, embed_dim: int, feature_dim: int, weight_norm: bool, normalize: bool) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The release's ``fc`` projection (+ l2 unless ``--no_imgnorm``) as a :class:`~kgitm.encoders.image.RegionEncoder`.

    ``weight_norm`` (SCAN's ``--precomp_enc_type weight_norm``) expects ``fc.weight_g``/``fc.weight_v``
    and folds them into ``fc.weight``; otherwise ``fc.weight`` must be there. Either way a key of the other
    kind is left over and refused.

    Returns:
        The encoder's config (``class_path``/``init_args``) and its state dict under ``image_encoder.``.
    """
    if weight_norm:
        weight = fold_weight_norm(state, "fc", dim=None)
        if weight is None:
            raise ReleaseFormatError(f"{state.source}: missing key {state.name}.fc.weight_g (the options say precomp_enc_type weight_norm)")
    else:
        weight = state.take("fc.weight", (embed_dim, feature_dim))
    if tuple(weight.shape) != (embed_dim, feature_dim):
        raise ReleaseFormatError(f"{state.source}: {state.name}.fc weight has shape {tuple(weight.shape)}, expected {(embed_dim, feature_dim)}")
    bias = state.take("fc.bias", (embed_dim,))
    config = {"class_path": REGION_ENCODER, "init_args": {"normalize_input": False, "normalize": normalize}}
    return config, {"image_encoder.fc.weight": weight.float(), "image_encoder.fc.bias": bias.float()}


def gru_text_encoder(
    state: ModuleState,
    vocab: ReleaseVocabulary,
    *,
    word_dim: int,
    embed_dim: int,
    num_layers: int,
    bidirectional: bool,
    rnn: str = "rnn",
) -> tuple[dict[str, Any], dict[str, Tensor], list[str]]:
    """The release's ``embed`` + ``rnn`` as a :class:`~kgitm.encoders.text.BiGRUTextEncoder` (directions
    averaged when bi-directional, as SCAN/GSMN do; l2 per word).

    The embedding rows are reordered to kgitm's vocabulary order
    (:meth:`~kgitm.convert.release.ReleaseVocabulary.kgitm_order`); the GRU keys keep their names
    (``weight_ih_l{k}[_reverse]``, gates r, z, n as in ``torch.nn.GRU``).

    Returns:
        The encoder's config, its state dict under ``text_encoder.``, and kgitm's vocabulary.
    """
    embed = state.take("embed.weight", (None, word_dim))
    if embed.shape[0] != len(vocab):
        raise ReleaseFormatError(
            f"{state.source}: {state.name}.embed.weight has {embed.shape[0]} rows but {vocab.path} has {len(vocab)} words; "
            "give the vocabulary this model was trained with"
        )
    itos, rows = vocab.kgitm_order()
    out = {"text_encoder.embed.weight": embed[rows].float()}
    for layer in range(num_layers):
        size_in = word_dim if layer == 0 else embed_dim * (2 if bidirectional else 1)
        for suffix in ("", "_reverse") if bidirectional else ("",):
            for kind, shape in (("weight_ih", (3 * embed_dim, size_in)), ("weight_hh", (3 * embed_dim, embed_dim)),
                                ("bias_ih", (3 * embed_dim,)), ("bias_hh", (3 * embed_dim,))):
                key = f"{kind}_l{layer}{suffix}"
                out[f"text_encoder.gru.{key}"] = state.take(f"{rnn}.{key}", shape).float()
    config = {
        "class_path": GRU_TEXT_ENCODER,
        "init_args": {"word_dim": word_dim, "num_layers": num_layers, "bidirectional": bidirectional, "normalize": True},
    }
    return config, out, itos


def take_module(state: ModuleState, module: nn.Module, *, source: str, target: str) -> dict[str, Tensor]:
    """Every key of ``module``'s state dict, taken from the release's ``state`` under ``source`` (a key
    prefix such as ``"gpool."``) with ``module``'s shapes, and returned under ``target`` (such as
    ``"matcher.image_pool."``): for kgitm modules whose parameter names are the release's.

    A batch norm's ``num_batches_tracked`` (absent from files of PyTorch < 0.4.1, and unused at
    inference) is set to 0 when the file lacks it.
    """
    out = {}
    for key, value in module.state_dict().items():
        if key.endswith("num_batches_tracked") and not state.has(source + key):
            out[target + key] = torch.zeros_like(value)
            continue
        taken = state.take(source + key, tuple(value.shape))
        out[target + key] = taken.to(value.dtype)
    return out


def check_vocab_size(opt: ReleaseOptions, vocab: ReleaseVocabulary, *, appended: Optional[str] = None) -> None:
    """Refuse a vocabulary of another size than the run's option ``vocab_size`` (when the release saved it).

    Args:
        appended: a word the release appends to the file's words after reading it (VSE-infinity's
            ``<mask>``), already in ``vocab``; named in the message so the file's count reads right.

    Raises:
        ReleaseFormatError: the sizes differ (names the checkpoint, both sizes and the fix).
    """
    size = opt.get("vocab_size", None)
    if size is None or int(size) == len(vocab):
        return
    words = f"{len(vocab) - 1} words (+ {appended})" if appended else f"{len(vocab)} words"
    raise ReleaseFormatError(f"{opt.source}: option vocab_size={size} but {vocab.path} has {words}; give the run's vocabulary")


def refuse_full_image(opt: ReleaseOptions, img: ModuleState, *, release: str) -> str:
    """The release's ``--data_name`` (returned), refused unless it is a ``*_precomp`` run without a CNN.

    VSE++ and VSRN also train over pixels (``--data_name f30k``, an ``img_enc.cnn.*`` backbone); kgitm matches
    precomputed region or image features only.

    Raises:
        ReleaseFormatError: a full-image model, naming the CNN key or the option.
    """
    data_name = str(opt.get("data_name", "precomp"))
    cnn = [k for k in img.keys() if k.startswith("cnn.")]
    if not data_name.endswith("_precomp") or cnn:
        where = f"unexpected key {img.name}.{cnn[0]}" if cnn else f"option data_name={data_name!r}"
        raise ReleaseFormatError(
            f"{img.source}: {where}: a full-image {release} model (a CNN over pixels); kgitm matches precomputed features "
            "only (convert a *_precomp run)"
        )
    return data_name


def refuse_order_embeddings(opt: ReleaseOptions) -> str:
    """The VSE++ family's ``--measure`` (returned: always ``cosine``); order embeddings are refused.

    Raises:
        ReleaseFormatError: ``--measure order`` or ``--use_abs`` (not implemented in kgitm).
    """
    measure = opt.get("measure", "cosine")
    if measure != "cosine":
        raise opt.refuse("measure", measure, "order embeddings are not implemented in kgitm (only --measure cosine)")
    if opt.get("use_abs", False):
        raise opt.refuse("use_abs", True, "the absolute value of the embeddings belongs to order embeddings, not implemented in kgitm")
    return str(measure)


def hinge_model(
    *, embed_dim: int, image_cfg: dict[str, Any], text_cfg: dict[str, Any], matcher: dict[str, Any], margin: float,
    max_violation: bool, warmup_epochs: Optional[int] = None,
) -> dict[str, Any]:
    """The config's ``model`` group of a release trained with the VSE++ hinge, summed over the batch as every
    release here sums it (``warmup_epochs``: VSE-infinity's epochs of the sum over all negatives, when it has them).
    """
    loss_args: dict[str, Any] = {"margin": margin, "max_violation": max_violation, "reduction": "sum"}
    if warmup_epochs is not None:
        loss_args["warmup_epochs"] = warmup_epochs
    return {
        "embed_dim": embed_dim,
        "image_encoder": image_cfg,
        "text_encoder": text_cfg,
        "matcher": matcher,
        "loss": [{"class_path": HINGE_LOSS, "init_args": loss_args}],
    }
