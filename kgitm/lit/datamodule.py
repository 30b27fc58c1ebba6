"""Lightning data module over the precomputed layout (:mod:`kgitm.data.precomp`).

Training samples are captions, each paired with its image (the field's convention). Evaluation
iterates over all captions of a split in order; the task encodes each image once (at its first
caption) and scores the full matrix with the exact protocol of :mod:`kgitm.eval.metrics`. The
datasets and the collation are the plain-PyTorch data pipeline (:mod:`kgitm.pipeline`); this module
opens splits, builds the vocabulary and makes loaders.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from kgitm.core import CAPTIONS_PER_IMAGE
from kgitm.core.io import read_lines
from kgitm.core.text import UNK, CaptionTokenizer, Vocabulary
from kgitm.data.precomp import PrecompSplit
from kgitm.eval.metrics import PROTOCOLS
from kgitm.pipeline.dataset import CaptionImageDataset, CaptionSet, CaptionTransform, SceneGraphLimits
from kgitm.pipeline.diagnostics import diagnostic_sets
from kgitm.pipeline.graph_provider import GraphProvider
from kgitm.pipeline.hard_negatives import SYMMETRIC_PREDICATES
from kgitm.pipeline.sampling import ResumableSampler


#: above this fraction of empty images or unknown caption words a split is reported as degenerate
DEGENERATE_FRACTION = 0.5


class PrecompDataModule(L.LightningDataModule):
    """Data module for any data set in the precomputed layout (SynthScenes, Flickr30K, COCO).

    Args:
        root: folder with the split files.
        captions_per_image: ``k`` captions per image.
        train_split / val_split / test_split: split names.
        batch_size: training batch size (captions).
        eval_batch_size: batch size for encoding during evaluation.
        num_workers: data loader worker processes (``0``: load in the training process). Each worker
            re-opens the memory-mapped features once (:class:`~kgitm.data.precomp.PrecompSplit` pickles
            without them).
        pin_memory: page-locked batches for faster host-to-GPU copies (default ``None``: when CUDA is
            available).
        persistent_workers: keep the workers between epochs (with ``num_workers > 0``).
        prefetch_factor: batches each worker loads ahead (default ``None``: PyTorch's 2).
        max_words: captions are truncated to this many tokens.
        min_word_count: vocabulary keeps training words seen at least this often.
        val_max_images: validate on the first this-many images only (``None``: all), so that
            per-epoch validation of cross-attention matchers stays affordable.
        require_boxes: fail early when boxes/sizes are missing (graph matchers).
        graph_store: folder of the graph stores written by ``kgitm preprocess`` (``None``: no
            graphs; GSMN sparse and SGM need them).
        scene_graphs: also serve textual and visual scene graphs (SGM); needs ``graph_store``.
        scene_graph_source: which visual scene graphs SGM reads: ``"oracle"`` (``{split}_scene_graphs.json``:
            in SynthScenes the ground truth, an oracle no real system has) or a predicted source
            (``{split}_scene_graphs_{name}.json``: SynthScenes' simulated ``predcls``, ``sgcls``, ``sgdet``,
            or a Neural Motifs run); ``kgitm preprocess`` builds a store for each file present.
        scene_graph_flip: exchange subject and object of every visual relation (a test-time ablation:
            ``kgitm test ... --data.scene_graph_flip true``).
        scene_graph_limits: padding limits of the scene-graph tensors.
        visual_scene_graphs: with ``scene_graphs``, serve the images' scene graphs too (default True;
            false serves the captions' only, which is all CORA reads: no visual graph store needed).
        relation_swap_negatives: give every training caption a relation-swapped copy
            (:mod:`kgitm.pipeline.hard_negatives`) for a hard-negative loss term
            (:class:`~kgitm.models.losses.RelationSwapHinge`); needs ``graph_store``.
        symmetric_predicates: predicate lemmas never swapped (default
            :data:`kgitm.pipeline.hard_negatives.SYMMETRIC_PREDICATES`).
        swap_predicates: if given, swap only relations with these predicate lemmas (default ``None``:
            every asymmetric one).
        diagnostics: evaluate the SynthScenes diagnostic sets (``root/diagnostics/``) at test time
            when present.
        test_protocols: the retrieval protocols ``kgitm test`` reports (:data:`kgitm.eval.metrics.PROTOCOLS`):
            ``[single]`` (Flickr30K 1K test), or for the COCO 5K test ``[coco5k, coco1k]`` (the first
            is the headline ``test/*`` metrics, every one is in ``test_results.json``);
            ``kgitm test --protocol`` overrides it.
        fold_images: images per fold of the ``coco1k`` protocol.
        vocab_file: read the vocabulary from this file (one word per line, padding and unknown first:
            ``vocab.txt`` of a run folder) instead of building it from the training captions; then the
            training split is not opened (evaluation of a trained run; ``kgitm test`` sets it).
        tokenizer: how captions become tokens: ``"words"`` (the project's, default; what graph stores
            and knowledge sources index) or ``"treebank"`` (``nltk.word_tokenize(caption.lower())`` as the
            SCAN/VSE++ releases tokenised, :func:`~kgitm.core.text.tokenize_treebank`; the configs that
            ``kgitm convert-checkpoint`` writes set it). Not with ``graph_store``.
        boundary_tokens: wrap every caption in ``<start>``/``<end>`` (the releases' convention; default False).
            Not with ``graph_store``.
        captions_suffix: the caption file of a split is ``{split}_{captions_suffix}`` (default
            ``caps.txt``; a converted GSMN reads ``precaps_stan.txt``, its captions as token ids).
        id_vocabulary: with ``tokenizer: ids``: the file of the ids' words, one per line in id order (a
            converted GSMN's ``release_vocab.txt``).
        box_normalization: ``"size"`` (default) or ``"gsmn_release"``: boxes scaled x by the image
            height and y by its width, as GSMN's released models were trained
            (:class:`~kgitm.pipeline.dataset.CaptionImageDataset`).
    """

    def __init__(
        self,
        root: str = "data/synthscenes",
        *,
        captions_per_image: int = CAPTIONS_PER_IMAGE,
        train_split: str = "train",
        val_split: str = "dev",
        test_split: str = "test",
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        pin_memory: Optional[bool] = None,
        persistent_workers: bool = True,
        prefetch_factor: Optional[int] = None,
        max_words: int = 64,
        min_word_count: int = 1,
        val_max_images: Optional[int] = None,
        require_boxes: bool = False,
        graph_store: Optional[str] = None,
        scene_graphs: bool = False,
        scene_graph_source: str = "oracle",
        scene_graph_flip: bool = False,
        scene_graph_limits: SceneGraphLimits = SceneGraphLimits(),
        visual_scene_graphs: bool = True,
        relation_swap_negatives: bool = False,
        symmetric_predicates: Sequence[str] = SYMMETRIC_PREDICATES,
        swap_predicates: Optional[Sequence[str]] = None,
        diagnostics: bool = True,
        test_protocols: Sequence[str] = ("single",),
        fold_images: int = 1000,
        vocab_file: Optional[str] = None,
        tokenizer: Literal["words", "treebank", "ids"] = "words",
        boundary_tokens: bool = False,
        captions_suffix: str = "caps.txt",
        id_vocabulary: Optional[str] = None,
        box_normalization: Literal["size", "gsmn_release"] = "size",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.id_words = read_lines(id_vocabulary, what="id vocabulary word") if id_vocabulary is not None else None
        self.tokenizer = CaptionTokenizer(tokenizer, boundary_tokens=boundary_tokens, id_words=self.id_words)
        if graph_store is not None and not self.tokenizer.is_default():
            raise ValueError(
                f"data.tokenizer {tokenizer!r} / data.boundary_tokens {boundary_tokens}: the graph store indexes the project's "
                "own tokens; use tokenizer 'words' without boundary tokens, or unset data.graph_store"
            )
        bad = [p for p in test_protocols if p not in PROTOCOLS]
        if bad or not test_protocols:
            raise ValueError(f"data.test_protocols {list(test_protocols)}: each must be one of {', '.join(PROTOCOLS)}")
        self.root = Path(root)
        if not isinstance(scene_graph_limits, SceneGraphLimits):
            scene_graph_limits = SceneGraphLimits(**dict(scene_graph_limits))
        self.scene_graph_limits = scene_graph_limits
        self._splits: dict[str, PrecompSplit] = {}
        self._coverage_checked: set[str] = set()
        if vocab_file is not None:  # evaluation of a trained run: the run's vocabulary, train is not opened
            path = Path(vocab_file)
            self.vocab = Vocabulary.from_words(read_lines(path, what="vocabulary word"))
        else:
            self.vocab = Vocabulary.build(self.open_split(train_split).captions, min_count=min_word_count, tokenizer=self.tokenizer)
        self._graphs = None
        if scene_graphs and graph_store is None:
            raise ValueError("scene_graphs=True needs graph_store (run `kgitm preprocess` first)")
        if relation_swap_negatives and graph_store is None:
            raise ValueError("relation_swap_negatives=True needs graph_store (the parsed captions of `kgitm preprocess`)")
        if not relation_swap_negatives and (swap_predicates is not None or tuple(symmetric_predicates) != SYMMETRIC_PREDICATES):
            rank_zero_warn(
                "data.swap_predicates / data.symmetric_predicates are set but have no effect: they choose the "
                "relations of the relation-swap negatives; set data.relation_swap_negatives true to use them"
            )
        self._transforms: list[CaptionTransform] = []
        if graph_store is not None:
            self._graphs = GraphProvider(
                Path(graph_store), data_root=self.root, splits=(train_split, val_split, test_split)
            )

    # ------------------------------------------------------------------ info for linked model args
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def vocab_words(self) -> list[str]:
        """The vocabulary's words in id order (padding and unknown first)."""
        return list(self.vocab.itos)

    @property
    def feature_dim(self) -> int:
        """The region feature size, from a split already open (train when training; else the test split)."""
        split = next(iter(self._splits.values()), None) or self.open_split(self.hparams.test_split)
        return split.feature_dim

    def train_batches_per_epoch(self, world_size: int = 1) -> int:
        """Optimiser steps in one epoch (the training loader drops the last partial batch), without
        building the training set."""
        n = self.open_split(self.hparams.train_split).num_captions
        per_rank = math.ceil(n / max(1, world_size))
        return per_rank // self.hparams.batch_size if per_rank > self.hparams.batch_size else 1

    def check_test_protocols(self, protocols: Sequence[str]) -> None:
        """Refuse, before any encoding, protocols the test split cannot be scored with (one line)."""
        bad = [p for p in protocols if p not in PROTOCOLS]
        if bad or not protocols:
            raise ValueError(f"test protocols {list(protocols)}: each must be one of {', '.join(PROTOCOLS)}")
        if "coco1k" in protocols:
            n = self.open_split(self.hparams.test_split).num_images
            if n % self.hparams.fold_images:
                raise ValueError(
                    f"protocol coco1k: the test split {self.hparams.test_split!r} of {self.root} has {n} images, not a multiple of "
                    f"data.fold_images {self.hparams.fold_images}; test the 5K split (COCO testall) or set --data.fold_images"
                )

    def set_caption_transforms(self, transforms: Sequence[CaptionTransform]) -> None:
        """The per-caption transforms the model needs (:meth:`kgitm.models.MatchingModel.caption_transforms`);
        the task calls this in its ``setup``, before any loader is made."""
        self._transforms = list(transforms)

    # ------------------------------------------------------------------ splits and caption sets
    def open_split(self, name: str) -> PrecompSplit:
        if name not in self._splits:
            split = self._splits[name] = PrecompSplit(
                self.root,
                name,
                captions_file=self.root / f"{name}_{self.hparams.captions_suffix}",
                captions_per_image=self.hparams.captions_per_image,
                require_boxes=self.hparams.require_boxes,
            )
            empty = split.empty_image_fraction()
            if empty > DEGENERATE_FRACTION:
                rank_zero_warn(
                    f"{self.root / f'{name}_ims.npy'}: {100 * empty:.0f}% of the images sampled have no non-zero region; "
                    "such images are all padding and cannot be matched (check the feature extraction)"
                )
        return self._splits[name]

    def check_vocabulary_coverage(self, split: PrecompSplit) -> None:
        """Warn when most words of a split's captions are unknown to the vocabulary (a caption file of
        another data set or language, or a vocabulary of another run)."""
        if split.split in self._coverage_checked:
            return
        self._coverage_checked.add(split.split)
        total = unknown = 0
        for caption in split.captions[:: max(1, len(split.captions) // 2000)]:
            ids = self.vocab.encode(self.tokenizer(caption))
            total += len(ids)
            unknown += sum(i == self.vocab.stoi[UNK] for i in ids)
        if total and unknown / total > DEGENERATE_FRACTION:
            rank_zero_warn(
                f"{split.captions_path}: {100 * unknown / total:.0f}% of the words sampled are not in the vocabulary "
                f"({len(self.vocab)} words{', from ' + str(self.hparams.vocab_file) if self.hparams.vocab_file else ''}); "
                "is this the caption file of the data set the model was trained on?"
            )

    def caption_set(self, split: PrecompSplit, *, max_images: Optional[int] = None) -> CaptionSet:
        k = split.captions_per_image
        n = split.num_images if max_images is None else min(max_images, split.num_images)
        return CaptionSet(split.split, split.captions[: n * k], np.arange(n * k) // k)

    def dataset(
        self, split: PrecompSplit, captions: CaptionSet, *, relation_swap_negatives: bool = False,
        graph_provider: Optional[GraphProvider] = None,
    ) -> CaptionImageDataset:
        """The dataset of ``captions`` on ``split`` with this data module's settings; ``graph_provider``
        replaces the graph stores (``kgitm explain`` serves one caption, or a freshly parsed text)."""
        return CaptionImageDataset(
            split,
            captions,
            self.vocab,
            max_words=self.hparams.max_words,
            graph_provider=self._graphs if graph_provider is None else graph_provider,
            scene_graphs=self.hparams.scene_graphs,
            relation_swap_negatives=relation_swap_negatives,
            symmetric_predicates=self.hparams.symmetric_predicates,
            swap_predicates=self.hparams.swap_predicates,
            scene_graph_source=self.hparams.scene_graph_source,
            scene_graph_flip=self.hparams.scene_graph_flip,
            scene_graph_limits=self.scene_graph_limits,
            visual_scene_graphs=self.hparams.visual_scene_graphs,
            transforms=self._transforms,
            tokenizer=self.hparams.tokenizer,
            boundary_tokens=self.hparams.boundary_tokens,
            id_words=self.id_words,
            box_normalization=self.hparams.box_normalization,
        )

    def _loader(self, ds: CaptionImageDataset, *, train: bool, workers: bool = True) -> DataLoader:
        hp = self.hparams
        num_workers = hp.num_workers if workers else 0
        pin = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        return DataLoader(
            ds,
            batch_size=hp.batch_size if train else hp.eval_batch_size,
            # training: a shuffled order that a mid-epoch checkpoint can resume (kgitm.pipeline.sampling)
            sampler=ResumableSampler(ds, shuffle=True) if train else None,
            drop_last=train and len(ds) > hp.batch_size,
            num_workers=num_workers,
            collate_fn=ds.collator(),
            pin_memory=pin,
            persistent_workers=hp.persistent_workers and num_workers > 0,
            prefetch_factor=hp.prefetch_factor if num_workers > 0 else None,
        )

    def train_dataset(self) -> CaptionImageDataset:
        """The training set (built once: its captions are tokenised and indexed up front)."""
        # the same model's transforms are rebuilt on each request; their kinds identify them
        key = (tuple((type(t).__qualname__, getattr(t, "field", None)) for t in self._transforms), self.hparams.relation_swap_negatives)
        if getattr(self, "_train_set", (None, None))[0] != key:
            split = self.open_split(self.hparams.train_split)
            ds = self.dataset(split, self.caption_set(split), relation_swap_negatives=self.hparams.relation_swap_negatives)
            self._train_set = (key, ds)
        return self._train_set[1]

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), train=True)

    def val_dataloader(self) -> DataLoader:
        split = self.open_split(self.hparams.val_split)
        self.check_vocabulary_coverage(split)
        return self._loader(self.dataset(split, self.caption_set(split, max_images=self.hparams.val_max_images)), train=False)

    def test_dataloader(self) -> DataLoader:
        split = self.open_split(self.hparams.test_split)
        self.check_vocabulary_coverage(split)
        return self._loader(self.dataset(split, self.caption_set(split)), train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # ------------------------------------------------------------------ diagnostics (SynthScenes)
    def diagnostic_loaders(self) -> dict[str, dict[str, Any]]:
        """The diagnostic sets of the test split (:func:`kgitm.pipeline.diagnostics.diagnostic_sets`), as
        loaders over captions.

        Returns ``{name: {"kind": "pairs", "positive": loader, "negative": loader}}`` for the
        relation-swap and attribute-swap sets and ``{"kind": "retrieval", "loader": loader}`` for the
        synonym-shift caption set. Empty when ``diagnostics`` is off or the files are absent.
        """
        if not self.hparams.diagnostics:
            return {}
        split = self.open_split(self.hparams.test_split)
        sets = diagnostic_sets(self.root, self.hparams.test_split, num_images=split.num_images, captions_per_image=split.captions_per_image)
        out: dict[str, dict[str, Any]] = {}
        for name, d in sets.items():
            if d.kind == "pairs":
                out[name] = {
                    "kind": "pairs",
                    "positive": self._loader(self.dataset(split, d.positive), train=False, workers=False),
                    "negative": self._loader(self.dataset(split, d.negative), train=False, workers=False),
                }
            else:
                out[name] = {"kind": "retrieval", "loader": self._loader(self.dataset(split, d.captions), train=False, workers=False)}
        return out
