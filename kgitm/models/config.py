"""A :class:`~kgitm.models.MatchingModel` from a model config, without Lightning.

The model configs of ``configs/model/`` name their parts with ``class_path``/``init_args`` (the
LightningCLI convention). :func:`model_from_config` instantiates the four parts of the model from
such a file (or dict) and fills in what the CLI links from the data: the region feature size, the
vocabulary, and the joint size ``embed_dim`` of both encoders. The task's keys (``loss``,
``optimizer``, ``lr_scheduler``) are ignored.

Example::

    split = PrecompSplit("data/synthscenes", "test")
    vocab = Vocabulary.build(PrecompSplit("data/synthscenes", "train").captions)
    model = model_from_config("configs/model/scan_t2i.yaml", feature_dim=split.feature_dim, vocabulary=vocab)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from kgitm.core.text import Vocabulary
from kgitm.models.matching import MatchingModel

__all__ = ["instantiate", "model_from_config"]

_PARTS = ("image_encoder", "text_encoder", "matcher", "knowledge")


def instantiate(spec: Any, **extra: Any) -> Any:
    """Build ``{"class_path": ..., "init_args": {...}}`` (nested specs in ``init_args`` first);
    other values are returned as they are. ``extra`` init args are added (they override)."""
    if isinstance(spec, list):
        return [instantiate(s) for s in spec]
    if not (isinstance(spec, dict) and "class_path" in spec):
        return spec
    module, _, name = str(spec["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"class_path {spec['class_path']!r} cannot be imported ({err})") from None
    args = {k: instantiate(v) for k, v in (spec.get("init_args") or {}).items()}
    return cls(**{**args, **extra})


def model_from_config(
    config: str | os.PathLike | dict,
    *,
    feature_dim: int,
    vocabulary: Vocabulary,
    embed_dim: Optional[int] = None,
) -> MatchingModel:
    """The :class:`~kgitm.models.MatchingModel` of a model config.

    Args:
        config: a model config file (``configs/model/*.yaml``) or its parsed dict.
        feature_dim: the region feature size of the data (``split.feature_dim``).
        vocabulary: the training vocabulary (the text encoder's size and words).
        embed_dim: the joint size (default: the config's ``embed_dim``, else 1024).

    Raises:
        ValueError: the config lacks a part or names a class that cannot be imported.
    """
    if not isinstance(config, dict):
        config = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    missing = [p for p in _PARTS[:3] if p not in config]
    if missing:
        raise ValueError(f"model config has no {missing}: expected image_encoder, text_encoder and matcher entries")
    size = int(embed_dim or config.get("embed_dim", 1024))
    image_encoder = instantiate(config["image_encoder"], feature_dim=feature_dim, embed_dim=size)
    text_encoder = instantiate(
        config["text_encoder"], vocab_size=len(vocabulary), vocab_words=list(vocabulary.itos), embed_dim=size
    )
    matcher = instantiate(config["matcher"])
    knowledge = instantiate(config["knowledge"]) if config.get("knowledge") else None
    return MatchingModel(image_encoder, text_encoder, matcher, knowledge)
