"""A trained run folder as a plain :class:`~kgitm.models.MatchingModel` and its data, without Lightning.

``kgitm explain`` answers in a few seconds; importing Lightning alone takes about three on a laptop CPU.
:func:`load_run_model` builds the model from the run's saved config (:func:`kgitm.models.config.model_from_config`,
the sizes the CLI links filled from the data and the run's vocabulary) and loads the checkpoint's
``model.*`` weights; :class:`RunData` opens the run's splits and builds datasets with the data
config's settings, as :meth:`kgitm.lit.datamodule.PrecompDataModule.dataset` does (a test checks that
both give the same pair). ``kgitm explain`` and ``kgitm report`` use it; training and ``kgitm test`` use the
Lightning path (:func:`kgitm.cli.runs.load_run`).

A run folder (``runs/<experiment>/seed<seed>``) holds ``logs/config.yaml``, ``checkpoints/best.ckpt``
(else ``last.ckpt``) and ``vocab.txt``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from kgitm.core.io import read_lines
from kgitm.core.text import Vocabulary
from kgitm.data.precomp import PrecompSplit
from kgitm.models.config import model_from_config
from kgitm.models.matching import MatchingModel
from kgitm.pipeline.dataset import CaptionImageDataset, CaptionSet, SceneGraphLimits
from kgitm.pipeline.diagnostics import diagnostic_sets
from kgitm.pipeline.graph_provider import GraphProvider

__all__ = ["RUN_CHECKPOINTS", "RUN_CONFIGS", "RunData", "RunFolderError", "load_run_model", "run_files"]

#: where a run folder keeps its training config, and the checkpoints tried in order
RUN_CONFIGS = ("logs/config.yaml", "config.yaml")
RUN_CHECKPOINTS = ("checkpoints/best.ckpt", "checkpoints/last.ckpt")
#: the run's vocabulary file and the checkpoint key that holds it too (kgitm.cli.lightning.VOCAB_FILE,
#: kgitm.lit.module.VOCAB_KEY: not imported, they would import Lightning)
VOCAB_FILE = "vocab.txt"
VOCAB_KEY = "kgitm_vocabulary"
_PREFIX = "model."


class RunFolderError(ValueError):
    """A run folder lacks a file, or its config and checkpoint do not fit; the message says what to do."""


def run_files(run_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``(config, checkpoint)`` of a run folder.

    Raises:
        RunFolderError: the folder lacks either (the message says which and how to make it).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunFolderError(f"{run}: no such run folder; pass a folder written by `kgitm fit --run_dir RUN`")
    config = next((run / c for c in RUN_CONFIGS if (run / c).is_file()), None)
    if config is None:
        raise RunFolderError(f"{run}: no {' or '.join(RUN_CONFIGS)}; is this a run folder of `kgitm fit`?")
    ckpt = next((run / c for c in RUN_CHECKPOINTS if (run / c).is_file()), None)
    if ckpt is None:
        raise RunFolderError(f"{run}: no {' or '.join(RUN_CHECKPOINTS)}; train it with `kgitm fit ... --run_dir {run}`")
    return config, ckpt


class RunData:
    """The data side of a run: its vocabulary, its splits, graph stores and evaluation datasets.

    Args:
        data: the ``data`` section of the run's saved config (every init arg of
            :class:`~kgitm.lit.datamodule.PrecompDataModule`).
        vocab: the run's vocabulary.
        transforms: the model's caption transforms (:meth:`~kgitm.models.MatchingModel.caption_transforms`).
    """

    def __init__(self, data: dict[str, Any], vocab: Vocabulary, transforms: list[Any]) -> None:
        limits = data.get("scene_graph_limits") or {}
        self.hparams = SimpleNamespace(**{**data, "scene_graph_limits": SceneGraphLimits(**dict(limits))})
        self.root = Path(str(data["root"]))
        self.vocab = vocab
        self._transforms = list(transforms)
        self._splits: dict[str, PrecompSplit] = {}
        hp = self.hparams
        # the data options newer configs carry (older ones: the defaults)
        hp.tokenizer = data.get("tokenizer", "words")
        hp.boundary_tokens = data.get("boundary_tokens", False)
        hp.captions_suffix = data.get("captions_suffix", "caps.txt")
        hp.box_normalization = data.get("box_normalization", "size")
        self.id_words = read_lines(data["id_vocabulary"], what="id vocabulary word") if data.get("id_vocabulary") else None
        self._graphs = (
            GraphProvider(Path(hp.graph_store), data_root=self.root, splits=(hp.train_split, hp.val_split, hp.test_split))
            if hp.graph_store else None
        )

    def set_caption_transforms(self, transforms: list[Any]) -> None:
        """The model's caption transforms (as :meth:`kgitm.lit.datamodule.PrecompDataModule.set_caption_transforms`)."""
        self._transforms = list(transforms)

    def open_split(self, name: str) -> PrecompSplit:
        if name not in self._splits:
            self._splits[name] = PrecompSplit(self.root, name, captions_file=self.root / f"{name}_{self.hparams.captions_suffix}",
                                              captions_per_image=self.hparams.captions_per_image,
                                              require_boxes=self.hparams.require_boxes)
        return self._splits[name]

    def caption_set(self, split: PrecompSplit) -> CaptionSet:
        k = split.captions_per_image
        return CaptionSet(split.split, split.captions, np.arange(split.num_images * k) // k)

    def dataset(self, split: PrecompSplit, captions: CaptionSet, *, graph_provider: Optional[Any] = None) -> CaptionImageDataset:
        """An evaluation dataset with the settings of :meth:`kgitm.lit.datamodule.PrecompDataModule.dataset`."""
        hp = self.hparams
        return CaptionImageDataset(
            split, captions, self.vocab, max_words=hp.max_words,
            graph_provider=self._graphs if graph_provider is None else graph_provider,
            scene_graphs=hp.scene_graphs, scene_graph_source=hp.scene_graph_source, scene_graph_flip=hp.scene_graph_flip,
            scene_graph_limits=hp.scene_graph_limits, transforms=self._transforms, tokenizer=hp.tokenizer,
            boundary_tokens=hp.boundary_tokens, id_words=self.id_words, box_normalization=hp.box_normalization,
        )

    def _loader(self, ds: CaptionImageDataset, *, train: bool = False, workers: bool = False) -> DataLoader:
        return DataLoader(ds, batch_size=self.hparams.eval_batch_size, shuffle=False, collate_fn=ds.collator())

    def diagnostic_loaders(self) -> dict[str, dict[str, Any]]:
        """The test split's diagnostic sets as loaders, as
        :meth:`kgitm.lit.datamodule.PrecompDataModule.diagnostic_loaders` gives them (``kgitm report``'s
        failures; a test checks they agree with the accuracies of ``kgitm test``)."""
        if not self.hparams.diagnostics:
            return {}
        split = self.open_split(self.hparams.test_split)
        sets = diagnostic_sets(self.root, split.split, num_images=split.num_images, captions_per_image=split.captions_per_image)
        out: dict[str, dict[str, Any]] = {}
        for name, d in sets.items():
            if d.kind == "pairs":
                out[name] = {"kind": "pairs", "positive": self._loader(self.dataset(split, d.positive)),
                             "negative": self._loader(self.dataset(split, d.negative))}
            else:
                out[name] = {"kind": "retrieval", "loader": self._loader(self.dataset(split, d.captions))}
        return out


def load_run_model(
    run_dir: str | os.PathLike, *, data_root: Optional[str] = None, graph_store: Optional[str] = None,
    device: torch.device | str = "cpu",
) -> tuple[MatchingModel, RunData]:
    """The run's model (eval mode, on ``device``) and data, without Lightning.

    Args:
        run_dir: the run folder.
        data_root: the data folder when it moved since training (``data.root``).
        graph_store: the graph stores when they moved (``data.graph_store``).
        device: where the model goes.

    Raises:
        RunFolderError: a file is missing, or the checkpoint's weights do not fit the config's model.
    """
    config_path, ckpt_path = run_files(run_dir)
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    data = dict(config.get("data") or {})
    if data_root:
        data["root"] = data_root
    if graph_store:
        data["graph_store"] = graph_store
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    vocab_file = Path(run_dir) / VOCAB_FILE
    if vocab_file.is_file():
        vocab = Vocabulary.from_words(read_lines(vocab_file, what="vocabulary word"))
    elif VOCAB_KEY in checkpoint:
        vocab = Vocabulary.from_words(list(checkpoint[VOCAB_KEY]))
    else:
        raise RunFolderError(f"{run_dir}: no {VOCAB_FILE} and a checkpoint without its vocabulary; evaluate with `kgitm test`")
    run_data = RunData(data, vocab, [])
    split = run_data.open_split(data.get("test_split", "test"))
    model = model_from_config(config.get("model") or {}, feature_dim=split.feature_dim, vocabulary=vocab)
    state = checkpoint.get("state_dict", {})
    if any(k.startswith(_PREFIX) for k in state):
        state = {k[len(_PREFIX):]: v for k, v in state.items() if k.startswith(_PREFIX)}
    else:  # kgitm 0.1: the model's parts at the top level, beside the loss terms
        state = {k: v for k, v in state.items() if k.split(".", 1)[0] in ("image_encoder", "text_encoder", "matcher", "knowledge")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = str(err).splitlines()
        raise RunFolderError(f"{ckpt_path}: weights do not fit the model of {config_path} "
                             f"({lines[1].strip() if len(lines) > 1 else err})") from None
    run_data.set_caption_transforms(model.caption_transforms())
    return model.eval().to(device), run_data
