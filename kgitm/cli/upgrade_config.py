"""``kgitm upgrade-config``: rewrite a config of kgitm 0.1 (or a run's saved ``config.yaml``) for this
version.

What changed, and what the command does about it:

* the joint size is set once, ``model.embed_dim`` (linked into both encoders; SGM takes it from the
  model): the encoders' ``embed_dim`` and SGM's are removed and their value becomes ``model.embed_dim``;
* GSMN's Gaussian kernels default to the authors' release (widths, radians, normalised over the
  kernels); a 0.1 GSMN config gets ``kernel_style: precision``, the kernels it was trained with;
* the loss is a list of terms, ``model.loss``: ``kgitm.losses.ContrastiveLoss`` becomes
  ``kgitm.models.losses.RetrievalHinge`` (with ``hardest_negative_warmup_epochs`` as its
  ``warmup_epochs``), and ``relation_swap_weight`` / ``rotated_image_weight`` become
  ``RelationSwapHinge`` / ``RotatedImageHinge`` entries (with ``relation_swap_pairs`` and the retrieval
  margin and the mean over the pairs, as 0.1 used them).

The output is plain YAML (comments are not kept). Checkpoints of kgitm 0.1 load without conversion.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from kgitm.core.io import atomic_write_text

_ENCODERS = ("image_encoder", "text_encoder")


class UpgradeError(ValueError):
    """A config that cannot be upgraded automatically (the message says what to do by hand)."""


def _model_section(config: dict) -> dict | None:
    if any(k in config for k in ("image_encoder", "text_encoder", "matcher")):
        return config  # a model config (configs/model/*.yaml)
    model = config.get("model")
    return model if isinstance(model, dict) else None


def upgrade_model(model: dict) -> list[str]:
    """Rewrite one model section in place; returns what was changed (one phrase each)."""
    changes: list[str] = []
    sizes = {}
    for part in _ENCODERS:
        init = (model.get(part) or {}).get("init_args") if isinstance(model.get(part), dict) else None
        if isinstance(init, dict) and "embed_dim" in init:
            sizes[part] = init.pop("embed_dim")
            if not init:
                model[part].pop("init_args")
            if not model[part]:
                model.pop(part)
    matcher = model.get("matcher")
    if isinstance(matcher, dict) and str(matcher.get("class_path", "")).endswith("gsmn.GSMNMatcher"):
        init = matcher.setdefault("init_args", {}) or {}
        matcher["init_args"] = init
        if "kernel_style" not in init:
            init["kernel_style"] = "precision"  # 0.1's kernels; the default is now the release's
            changes.append("GSMN kernel_style precision (kgitm 0.1's kernels)")
    if isinstance(matcher, dict) and str(matcher.get("class_path", "")).endswith("sgm.SGM"):
        init = matcher.get("init_args") or {}
        if "embed_dim" in init:
            sizes["matcher"] = init.pop("embed_dim")
    if sizes:
        if len(set(sizes.values())) > 1:
            raise UpgradeError(f"the encoders' and matcher's embed_dim differ ({sizes}); choose one and set model.embed_dim")
        model["embed_dim"] = next(iter(sizes.values()))
        changes.append(f"embed_dim {model['embed_dim']} of {', '.join(sizes)} -> model.embed_dim")

    warmup = model.pop("hardest_negative_warmup_epochs", None)
    swap_weight = model.pop("relation_swap_weight", None)
    swap_pairs = model.pop("relation_swap_pairs", None)
    rotated_weight = model.pop("rotated_image_weight", None)
    loss = model.get("loss")
    if isinstance(loss, dict) or warmup is not None or swap_weight or rotated_weight:
        init: dict[str, Any] = {}
        if isinstance(loss, dict):
            path = str(loss.get("class_path", ""))
            if not path.endswith("ContrastiveLoss"):
                raise UpgradeError(f"model.loss is {path!r}; rewrite it by hand as a list of kgitm.models.losses terms")
            init = dict(loss.get("init_args") or {})
        if warmup is not None:
            init["warmup_epochs"] = int(warmup)
        terms: list[dict] = [{"class_path": "kgitm.models.losses.RetrievalHinge", "init_args": init}]
        margin = float(init.get("margin", 0.2))
        pairs = int(swap_pairs) if swap_pairs is not None else 8
        if swap_weight:
            terms.append({"class_path": "kgitm.models.losses.RelationSwapHinge",
                          "init_args": {"weight": float(swap_weight), "pairs": pairs, "margin": margin, "reduction": "mean"}})
        if rotated_weight:
            terms.append({"class_path": "kgitm.models.losses.RotatedImageHinge",
                          "init_args": {"weight": float(rotated_weight), "pairs": pairs, "margin": margin, "reduction": "mean"}})
        model["loss"] = terms
        changes.append("loss -> model.loss: " + ", ".join(t["class_path"].rsplit(".", 1)[1] for t in terms))
    return changes


def upgrade_config(config: dict) -> list[str]:
    """Rewrite a parsed config (experiment, model, size or saved run config) in place; returns the changes.

    Raises:
        UpgradeError: a part that needs a decision by hand.
    """
    model = _model_section(config)
    if model is None:
        if isinstance(config.get("model"), str):
            raise UpgradeError(f"model is included from {config['model']!r}; upgrade that file")
        return []
    return upgrade_model(model)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="kgitm upgrade-config",
        description="Rewrite a model/experiment/size config (or a run's saved config.yaml) written for kgitm 0.1: "
        "the joint size becomes model.embed_dim and the loss becomes the list model.loss. Comments are not kept.",
    )
    p.add_argument("config", type=Path, help="the YAML file to upgrade")
    p.add_argument("--out", type=Path, default=None, help="where to write the result (default: print it)")
    args = p.parse_args(argv)
    try:
        config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"kgitm upgrade-config: {args.config}: no such file", file=sys.stderr)
        return 2
    if not isinstance(config, dict):
        print(f"kgitm upgrade-config: {args.config}: not a YAML mapping", file=sys.stderr)
        return 2
    try:
        changes = upgrade_config(config)
    except UpgradeError as err:
        print(f"kgitm upgrade-config: {args.config}: {err}", file=sys.stderr)
        return 1
    text = yaml.safe_dump(config, sort_keys=False)
    if args.out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(args.out, text)
    print(f"{args.config}: " + ("; ".join(changes) if changes else "nothing to change"), file=sys.stderr)
    return 0
