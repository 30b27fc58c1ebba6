"""Lightning data module over the precomputed layout (:mod:`kgitm.data.precomp`).

Training samples are captions, each paired with its image (the field's convention). Evaluation
iterates over all captions of a split in order; the module encodes each image once (at its first
caption) and scores the full matrix with the exact protocol of :mod:`kgitm.eval.metrics`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from kgitm.data.hard_negatives import SYMMETRIC_PREDICATES, relation_swap
from kgitm.data.precomp import DataFormatError, PrecompSplit
from kgitm.data.text import tokenize
from kgitm.data.vocab import Vocabulary
from kgitm.graphs.geometry import normalize_boxes


@dataclass
class CaptionSet:
    """Captions scored against the images of a split (a split's own captions or a diagnostic set)."""

    name: str
    captions: list[str]
    image_index: np.ndarray  # (M,) image of each caption


class CaptionImageDataset(Dataset):
    """Caption ``k`` with the features of its image.

    Args:
        split: the opened split.
        captions: the caption set (defaults to the split's own captions).
        vocab: training vocabulary.
        max_words: captions are truncated to this many tokens.
        graph_provider: optional :class:`~kgitm.data.graph_provider.GraphProvider` serving dependency
            graphs (and, with ``scene_graphs``, textual and visual scene graphs) from the graph stores.
        scene_graphs: attach scene graphs for SGM.
        relation_swap_negatives: attach a relation-swapped copy of each caption
            (:func:`kgitm.data.hard_negatives.relation_swap`; ``None`` where no relation qualifies),
            read from the parsed scene graph of the graph store.
        symmetric_predicates: predicate lemmas never swapped.
        swap_predicates: if given, only relations with these predicate lemmas are swapped.
    """

    def __init__(
        self,
        split: PrecompSplit,
        captions: CaptionSet,
        vocab: Vocabulary,
        *,
        max_words: int,
        graph_provider: Optional[Any] = None,
        scene_graphs: bool = False,
        relation_swap_negatives: bool = False,
        symmetric_predicates: Sequence[str] = SYMMETRIC_PREDICATES,
        swap_predicates: Optional[Sequence[str]] = None,
    ) -> None:
        if relation_swap_negatives and graph_provider is None:
            raise ValueError("relation_swap_negatives needs the parsed captions of a graph store (set data.graph_store)")
        self.split = split
        self.scene_graphs = scene_graphs
        self.relation_swap_negatives = relation_swap_negatives
        self.symmetric_predicates = tuple(symmetric_predicates)
        self.swap_predicates = None if swap_predicates is None else tuple(swap_predicates)
        self.set = captions
        self.vocab = vocab
        self.max_words = max_words
        self.graph_provider = graph_provider
        self.tokens = []
        for k, c in enumerate(captions.captions):
            toks = tokenize(c)[:max_words]
            if not toks:
                raise DataFormatError(
                    f"{split.captions_path if captions.name == split.split else captions.name}:{k + 1}: "
                    f"caption has no words ({c!r}); fill or fix that line"
                )
            self.tokens.append(toks)
        boxes = None
        if split.boxes is not None:
            # normalised once, at load time (GSMN's release divided in place on every read)
            boxes = normalize_boxes(torch.from_numpy(np.array(split.boxes, dtype=np.float32)), torch.from_numpy(np.array(split.sizes)))
        self.boxes = boxes

    def __len__(self) -> int:
        return len(self.set.captions)

    def __getitem__(self, k: int) -> dict:
        i = int(self.set.image_index[k])
        feats = torch.from_numpy(np.array(self.split.images[i], dtype=np.float32))
        item = {
            "image": feats,
            "image_index": i,
            "caption_index": k,
            "words": self.tokens[k],
            "token_ids": torch.tensor(self.vocab.encode(self.tokens[k]), dtype=torch.long),
        }
        if self.boxes is not None:
            item["boxes"] = self.boxes[i]
        if self.graph_provider is not None:
            parsed = self.scene_graphs or self.relation_swap_negatives
            item["graph"] = self.graph_provider.caption(self.set.name, k, len(self.tokens[k]), scene_graph=parsed)
            if self.scene_graphs:
                item["visual_graph"] = self.graph_provider.image(self.split.split, i)
            if self.relation_swap_negatives:
                graph = item["graph"]["parsed"].scene_graph
                swapped = relation_swap(
                    self.tokens[k], graph, symmetric=self.symmetric_predicates, only=self.swap_predicates, choice=k
                )
                item["swap_words"] = swapped
                item["swap_token_ids"] = None if swapped is None else torch.tensor(self.vocab.encode(swapped), dtype=torch.long)
        return item


@dataclass
class SceneGraphLimits:
    """Padding limits of the scene-graph tensors (SGM): objects and relations per caption and per
    image, and words per predicate. Defaults follow Neural Motifs (36 objects, 25 relations)."""

    text_objects: int = 12
    text_relations: int = 12
    predicate_words: int = 3
    image_objects: int = 36
    image_relations: int = 25


def collate(items: list[dict], limits: Optional[SceneGraphLimits] = None) -> dict:
    """Stack images, pad captions to the longest in the batch.

    Output keys: ``images (B, R, D)``, ``region_mask (B, R)`` (all-zero regions are padding),
    ``boxes (B, R, 4)`` when present, ``token_ids (B, L)``, ``word_mask (B, L)``, ``lengths (B,)``,
    ``words`` (list of token lists), ``image_index (B,)``, ``caption_index (B,)``, ``adjacency (B, L, L)``
    when graphs are provided; with relation-swap negatives also ``swap_token_ids (B, L)`` (the same
    positions, padded like ``token_ids``; a caption without a swap repeats its own tokens),
    ``swap_words`` and ``swap_valid (B,)`` bool.
    """
    images = torch.stack([it["image"] for it in items])
    lengths = torch.tensor([len(it["words"]) for it in items], dtype=torch.long)
    max_len = int(lengths.max())
    token_ids = torch.zeros(len(items), max_len, dtype=torch.long)
    for b, it in enumerate(items):
        token_ids[b, : len(it["token_ids"])] = it["token_ids"]
    batch = {
        "images": images,
        "region_mask": images.abs().sum(-1) > 0,
        "token_ids": token_ids,
        "word_mask": torch.arange(max_len)[None, :] < lengths[:, None],
        "lengths": lengths,
        "words": [it["words"] for it in items],
        "image_index": torch.tensor([it["image_index"] for it in items], dtype=torch.long),
        "caption_index": torch.tensor([it["caption_index"] for it in items], dtype=torch.long),
    }
    if "boxes" in items[0]:
        batch["boxes"] = torch.stack([it["boxes"] for it in items])
    if "swap_words" in items[0]:
        swap_ids = token_ids.clone()
        for b, it in enumerate(items):
            if it["swap_token_ids"] is not None:
                swap_ids[b, : len(it["swap_token_ids"])] = it["swap_token_ids"]
        batch["swap_token_ids"] = swap_ids
        batch["swap_words"] = [it["swap_words"] or it["words"] for it in items]
        batch["swap_valid"] = torch.tensor([it["swap_words"] is not None for it in items], dtype=torch.bool)
    if "graph" in items[0]:
        adj = torch.zeros(len(items), max_len, max_len, dtype=torch.bool)
        for b, it in enumerate(items):
            a = it["graph"]["adjacency"]
            n = a.shape[0]
            adj[b, :n, :n] = a
        batch["adjacency"] = adj
    if "visual_graph" in items[0]:
        from kgitm.graphs.scene_graph_batch import collate_text_scene_graphs, collate_visual_scene_graphs

        lim = limits or SceneGraphLimits()
        batch["caption_extra"] = collate_text_scene_graphs(
            [it["graph"]["parsed"] for it in items],
            max_objects=lim.text_objects,
            max_relations=lim.text_relations,
            max_predicate_words=lim.predicate_words,
            max_tokens=max_len,
        )
        batch["image_extra"] = collate_visual_scene_graphs(
            [it["visual_graph"] for it in items],
            num_regions=images.shape[1],
            max_objects=lim.image_objects,
            max_relations=lim.image_relations,
        )
    return batch


class PrecompDataModule(L.LightningDataModule):
    """Data module for any data set in the precomputed layout (SynthScenes, Flickr30K, COCO).

    Args:
        root: folder with the split files.
        captions_per_image: ``k`` captions per image.
        train_split / val_split / test_split: split names.
        batch_size: training batch size (captions).
        eval_batch_size: batch size for encoding during evaluation.
        num_workers: data loader workers.
        max_words: captions are truncated to this many tokens.
        min_word_count: vocabulary keeps training words seen at least this often.
        val_max_images: validate on the first this-many images only (``None``: all), so that
            per-epoch validation of cross-attention matchers stays affordable.
        require_boxes: fail early when boxes/sizes are missing (graph matchers).
        graph_store: folder of the graph stores written by ``kgitm preprocess`` (``None``: no
            graphs; GSMN sparse and SGM need them).
        scene_graphs: also serve textual and visual scene graphs (SGM); needs ``graph_store``.
        scene_graph_limits: padding limits of the scene-graph tensors.
        relation_swap_negatives: give every training caption a relation-swapped copy
            (:mod:`kgitm.data.hard_negatives`) for a hard-negative loss term
            (``MatchingModule(relation_swap_weight=...)``); needs ``graph_store``.
        symmetric_predicates: predicate lemmas never swapped (default
            :data:`kgitm.data.hard_negatives.SYMMETRIC_PREDICATES`).
        swap_predicates: if given, swap only relations with these predicate lemmas (default ``None``:
            every asymmetric one).
        diagnostics: evaluate the SynthScenes diagnostic sets (``root/diagnostics/``) at test time
            when present.
    """

    def __init__(
        self,
        root: str = "data/synthscenes",
        *,
        captions_per_image: int = 5,
        train_split: str = "train",
        val_split: str = "dev",
        test_split: str = "test",
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        max_words: int = 64,
        min_word_count: int = 1,
        val_max_images: Optional[int] = None,
        require_boxes: bool = False,
        graph_store: Optional[str] = None,
        scene_graphs: bool = False,
        scene_graph_limits: SceneGraphLimits = SceneGraphLimits(),
        relation_swap_negatives: bool = False,
        symmetric_predicates: Sequence[str] = SYMMETRIC_PREDICATES,
        swap_predicates: Optional[Sequence[str]] = None,
        diagnostics: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        if not isinstance(scene_graph_limits, SceneGraphLimits):
            scene_graph_limits = SceneGraphLimits(**dict(scene_graph_limits))
        self.scene_graph_limits = scene_graph_limits
        self._splits: dict[str, PrecompSplit] = {}
        train = self.open_split(train_split)
        self.vocab = Vocabulary.build(train.captions, min_count=min_word_count)
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
        if graph_store is not None:
            from kgitm.data.graph_provider import GraphProvider

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
        return self.open_split(self.hparams.train_split).feature_dim

    # ------------------------------------------------------------------ splits and caption sets
    def open_split(self, name: str) -> PrecompSplit:
        if name not in self._splits:
            self._splits[name] = PrecompSplit(
                self.root,
                name,
                captions_per_image=self.hparams.captions_per_image,
                require_boxes=self.hparams.require_boxes,
            )
        return self._splits[name]

    def caption_set(self, split: PrecompSplit, *, max_images: Optional[int] = None) -> CaptionSet:
        k = split.captions_per_image
        n = split.num_images if max_images is None else min(max_images, split.num_images)
        return CaptionSet(split.split, split.captions[: n * k], np.arange(n * k) // k)

    def dataset(
        self, split: PrecompSplit, captions: CaptionSet, *, relation_swap_negatives: bool = False
    ) -> CaptionImageDataset:
        return CaptionImageDataset(
            split,
            captions,
            self.vocab,
            max_words=self.hparams.max_words,
            graph_provider=self._graphs,
            scene_graphs=self.hparams.scene_graphs,
            relation_swap_negatives=relation_swap_negatives,
            symmetric_predicates=self.hparams.symmetric_predicates,
            swap_predicates=self.hparams.swap_predicates,
        )

    def _loader(self, ds: Dataset, *, train: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.hparams.batch_size if train else self.hparams.eval_batch_size,
            shuffle=train,
            drop_last=train and len(ds) > self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
            collate_fn=partial(collate, limits=self.scene_graph_limits),
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        split = self.open_split(self.hparams.train_split)
        ds = self.dataset(split, self.caption_set(split), relation_swap_negatives=self.hparams.relation_swap_negatives)
        return self._loader(ds, train=True)

    def val_dataloader(self) -> DataLoader:
        split = self.open_split(self.hparams.val_split)
        return self._loader(self.dataset(split, self.caption_set(split, max_images=self.hparams.val_max_images)), train=False)

    def test_dataloader(self) -> DataLoader:
        split = self.open_split(self.hparams.test_split)
        return self._loader(self.dataset(split, self.caption_set(split)), train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # ------------------------------------------------------------------ diagnostics (SynthScenes)
    def diagnostic_sets(self) -> dict[str, dict]:
        """The diagnostic sets of the test split, as loaders over captions.

        Returns ``{name: {"kind": "pairs", "positive": loader, "negative": loader}}`` for the
        relation-swap and attribute-swap files and ``{"kind": "retrieval", "loader": loader}`` for the
        synonym-shift caption set. Empty when ``diagnostics`` is off or the files are absent.
        """
        out: dict[str, dict] = {}
        diag = self.root / "diagnostics"
        if not self.hparams.diagnostics or not diag.is_dir():
            return out
        split = self.open_split(self.hparams.test_split)
        test = self.hparams.test_split
        for name in ("relation_swap", "attribute_swap"):
            path = diag / f"{test}_{name}.jsonl"
            if not path.exists():
                continue
            rows = []
            for ln, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                    rows.append((int(r["image"]), r["positive"], r["negative"]))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise DataFormatError(f"{path}:{ln}: expected a JSON object with image/positive/negative ({e})") from None
                if not 0 <= rows[-1][0] < split.num_images:
                    raise DataFormatError(f"{path}:{ln}: image {rows[-1][0]} outside the {test} split (0..{split.num_images - 1})")
            if not rows:
                continue
            img = np.array([r[0] for r in rows])
            pos = CaptionSet(f"{test}_{name}_positive", [r[1] for r in rows], img)
            neg = CaptionSet(f"{test}_{name}_negative", [r[2] for r in rows], img)
            out[name] = {
                "kind": "pairs",
                "positive": self._loader(self.dataset(split, pos), train=False),
                "negative": self._loader(self.dataset(split, neg), train=False),
            }
        syn = diag / f"{test}_synonym_shift_caps.txt"
        if syn.exists():
            shifted = PrecompSplit(
                self.root, test, captions_per_image=self.hparams.captions_per_image, captions_file=syn, check_finite=False
            )
            cs = CaptionSet(f"{test}_synonym_shift", shifted.captions, np.arange(shifted.num_captions) // shifted.captions_per_image)
            out["synonym_shift"] = {"kind": "retrieval", "loader": self._loader(self.dataset(split, cs), train=False)}
        return out
