"""Writing a :class:`~kgitm.convert.parts.Conversion` as a kgitm model folder.

``DIR/model.ckpt`` is a Lightning checkpoint of :class:`~kgitm.lit.module.MatchingModule` (its state dict
loaded strictly into the model the config builds, so a key or shape that does not fit fails here, not
at evaluation), holding kgitm's vocabulary; ``DIR/vocab.txt`` is that vocabulary one word per line;
``DIR/release_vocab.txt`` the release's words in its id order when its captions come as ids (GSMN);
``DIR/config.yaml`` a full config for ``kgitm predict|test --config DIR/config.yaml --ckpt_path
DIR/model.ckpt --data.root PRECOMP``; ``DIR/provenance.json`` what was converted (files and their
sha256, the release's options and bookkeeping). Each file is written atomically, the config last:
a folder with a config is complete.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Optional

import lightning
import torch
import yaml

from kgitm.convert.parts import Conversion
from kgitm.convert.release import ReleaseCheckpoint, ReleaseVocabulary
from kgitm.core import CAPTIONS_PER_IMAGE
from kgitm.core.io import atomic_open, atomic_write_json, atomic_write_text, sha256_file
from kgitm.lit.module import VOCAB_KEY, MatchingModule

__all__ = ["build_module", "kgitm_config", "write_conversion"]

#: captions are never truncated by the releases; this bound keeps every real caption whole
MAX_WORDS = 1024
#: the release's words in its id order, for captions given as ids (``data.tokenizer: ids``)
ID_VOCABULARY = "release_vocab.txt"
#: the key of the provenance record inside the converted checkpoint
PROVENANCE_KEY = "kgitm_converted_from"


def _instantiate(spec: dict[str, Any], **linked: Any) -> Any:
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**{**spec.get("init_args", {}), **linked})


def build_module(conv: Conversion) -> MatchingModule:
    """The :class:`~kgitm.lit.module.MatchingModule` the converted config builds, with the converted
    weights loaded strictly (every key present, none left over, every shape equal)."""
    m = conv.model
    module = MatchingModule(
        _instantiate(m["image_encoder"], feature_dim=conv.feature_dim, embed_dim=m["embed_dim"]),
        _instantiate(m["text_encoder"], vocab_size=len(conv.vocabulary), vocab_words=list(conv.vocabulary), embed_dim=m["embed_dim"]),
        _instantiate(m["matcher"]),
        loss=[_instantiate(t) for t in m.get("loss", [])] or None,
        embed_dim=m["embed_dim"],
    )
    module.model.load_state_dict(conv.state_dict, strict=True)
    return module


def kgitm_config(conv: Conversion, out_dir: Path) -> dict[str, Any]:
    """The full kgitm config of a conversion: trainer (one device, no logger or checkpoints), model,
    and the data options the release fixes (its vocabulary and tokenisation). ``data.root`` defaults to
    ``data/<data_name>`` (the name the release trained on); pass ``--data.root`` for your copy."""
    out_dir = out_dir.resolve()
    release_data = dict(conv.data)
    data_name = release_data.pop("data_name", "precomp")
    data = {
        "root": f"data/{data_name}",
        "captions_per_image": CAPTIONS_PER_IMAGE,  # every release: 5 captions per image
        "test_split": "test",
        "vocab_file": str(out_dir / "vocab.txt"),
        "tokenizer": "treebank",
        "boundary_tokens": True,
        "max_words": MAX_WORDS,
        "diagnostics": False,
        "num_workers": 0,
        **release_data,
    }
    if conv.id_words is not None:
        data["id_vocabulary"] = str(out_dir / ID_VOCABULARY)
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "auto",
            "devices": 1,
            "logger": False,
            "enable_checkpointing": False,
            "default_root_dir": str(out_dir),
        },
        "model": conv.model,
        "data": data,
    }


def _provenance(conv: Conversion, checkpoint: ReleaseCheckpoint, vocab: ReleaseVocabulary) -> dict[str, Any]:
    return {
        "release": conv.release,
        "checkpoint": {"path": str(checkpoint.path.resolve()), "sha256": sha256_file(checkpoint.path)},
        "vocabulary": {"path": str(vocab.path.resolve()), "sha256": sha256_file(vocab.path), "words": len(vocab)},
        "release_epoch": checkpoint.epoch,
        "release_best_rsum": checkpoint.best_rsum,
        "release_iterations": checkpoint.iterations,
        "options": conv.options,
    }


def write_conversion(conv: Conversion, out_dir: str | Path, checkpoint: ReleaseCheckpoint, vocab: ReleaseVocabulary,
                     *, command: Optional[str] = None) -> dict[str, Path]:
    """Write ``out_dir/{vocab.txt, model.ckpt, provenance.json, config.yaml}`` (atomically, the config last).

    Returns:
        The paths written, by name.
    """
    out_dir = Path(out_dir)
    module = build_module(conv)  # before anything is written: a conversion that does not load leaves no folder
    provenance = _provenance(conv, checkpoint, vocab)
    paths = {name: out_dir / name for name in ("vocab.txt", "model.ckpt", "provenance.json", "config.yaml")}
    atomic_write_text(paths["vocab.txt"], "".join(f"{w}\n" for w in conv.vocabulary))
    if conv.id_words is not None:
        paths[ID_VOCABULARY] = out_dir / ID_VOCABULARY
        atomic_write_text(paths[ID_VOCABULARY], "".join(f"{w}\n" for w in conv.id_words))
    ckpt = {
        "state_dict": module.state_dict(),
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
        VOCAB_KEY: list(conv.vocabulary),
        PROVENANCE_KEY: provenance,
    }
    with atomic_open(paths["model.ckpt"], "wb") as f:
        torch.save(ckpt, f)
    atomic_write_json(paths["provenance.json"], provenance)
    header = (
        f"# {conv.release} release converted by {command or 'kgitm convert-checkpoint'}\n"
        f"# from {provenance['checkpoint']['path']} (sha256 {provenance['checkpoint']['sha256'][:16]}...)\n"
        f"# with the vocabulary {provenance['vocabulary']['path']} ({len(vocab)} words); see provenance.json\n"
        f"#   kgitm predict --config {paths['config.yaml'].resolve()} --ckpt_path {paths['model.ckpt'].resolve()} "
        "--data.root PRECOMP --sims_out SIMS.npy\n"
    )
    atomic_write_text(paths["config.yaml"], header + yaml.safe_dump(kgitm_config(conv, out_dir), sort_keys=False))
    return paths
