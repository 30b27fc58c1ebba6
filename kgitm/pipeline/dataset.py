"""Captions paired with their images, every model input precomputed when a split is opened.

:class:`CaptionImageDataset` serves caption ``k`` with the region features of its image (the field's
convention: training samples are captions). When it is built it turns each caption, once, into all
the tensors a model reads: vocabulary ids, the caption transforms' outputs (concept ids of the words,
a pretrained tokenizer's pieces: :meth:`kgitm.models.MatchingModel.caption_transforms`), the textual
scene graph's index tensors and the relation-swapped copy; each image's visual scene graph likewise.
``__getitem__`` and :class:`Collator` then only gather and pad tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from kgitm.core.batch import Batch, CaptionInputs, ImageInputs
from kgitm.core.geometry import normalize_boxes
from kgitm.core.io import DataFormatError
from kgitm.core.text import CaptionTokenizer, Vocabulary
from kgitm.core.types import stack_padded
from kgitm.data.precomp import PrecompSplit
from kgitm.graphs.preprocess import ORACLE
from kgitm.graphs.scene_graph_index import pad_graph_indices, text_graph_index, visual_graph_index
from kgitm.pipeline.graph_provider import GraphProvider
from kgitm.pipeline.hard_negatives import SYMMETRIC_PREDICATES, relation_swap

__all__ = ["CaptionImageDataset", "CaptionSet", "CaptionTransform", "Collator", "SceneGraphLimits", "make_batch"]


class CaptionTransform(Protocol):
    """A per-caption data transform: fills one optional field of :class:`~kgitm.core.batch.CaptionInputs`.

    ``encode`` runs once per caption when the dataset is built; ``collate`` pads a batch of its
    outputs (``width`` is the batch's word axis ``L``). Implemented by
    :class:`kgitm.knowledge.mapping.ConceptIndex` (``concept_ids``) and
    :class:`kgitm.encoders.text.SubwordTransform` (``pieces``).
    """

    field: str

    def encode(self, tokens: list[str]) -> Any: ...

    def collate(self, items: list[Any], width: int) -> Any: ...


@dataclass
class CaptionSet:
    """Captions scored against the images of a split (a split's own captions or a diagnostic set).

    Attributes:
        name: the set's name (the split, or ``{split}_{diagnostic}``): where its graph store lives.
        captions: caption strings.
        image_index: ``(M,)`` the image of each caption.
    """

    name: str
    captions: list[str]
    image_index: np.ndarray


@dataclass
class SceneGraphLimits:
    """Padding limits of the scene-graph tensors (SGM): objects and relations per caption and per
    image, and words per predicate. Defaults follow Neural Motifs (36 objects, 25 relations).
    ``attributes`` is the attribute slots per caption object (CORA's entity composer; 0, the default,
    serves no attribute tensors)."""

    text_objects: int = 12
    text_relations: int = 12
    predicate_words: int = 3
    attributes: int = 0
    image_objects: int = 36
    image_relations: int = 25


class CaptionImageDataset(Dataset):
    """Caption ``k`` with the features of its image, all model inputs precomputed.

    Args:
        split: the opened split (images, boxes).
        captions: the caption set.
        vocab: the training vocabulary.
        max_words: captions are truncated to this many tokens.
        graph_provider: the graph stores (dependency graphs; with ``scene_graphs``, textual and visual
            scene graphs), or ``None``.
        scene_graphs: serve scene graphs (SGM).
        scene_graph_source: which visual scene graphs: ``"oracle"`` (``{split}_scene_graphs.json``, the
            ground truth where the data set has one) or a predicted source ``name``
            (``{split}_scene_graphs_{name}.json``: SynthScenes' ``predcls``/``sgcls``/``sgdet``, a Motifs run).
        scene_graph_flip: exchange the subject and object of every visual relation (an ablation: a
            matcher that reads the direction of the visual graph's edges should fall well below its score
            on the graphs as given).
        scene_graph_limits: their padding limits.
        visual_scene_graphs: with ``scene_graphs``, serve the images' scene graphs as well as the
            captions' (default True; CORA reads only the captions' and needs no visual graph store).
        relation_swap_negatives: give each caption a relation-swapped copy
            (:func:`kgitm.pipeline.hard_negatives.relation_swap`), read from the parsed scene graphs.
        symmetric_predicates: predicate lemmas never swapped.
        swap_predicates: if given, only relations with these predicate lemmas are swapped.
        transforms: caption transforms (:class:`CaptionTransform`), applied to every caption (and to
            its swapped copy).
        tokenizer: ``"words"`` (the project's tokens, default) or ``"treebank"`` (a converted release's,
            :func:`~kgitm.core.text.tokenize_treebank`); graphs index the project's tokens only.
        boundary_tokens: wrap every caption in ``<start>``/``<end>`` (a converted release's; default False).
        id_words: the words of the ids of ``tokenizer="ids"`` captions (a release's vocabulary, id order).
        box_normalization: ``"size"`` (default: x by the image width, y by its height) or
            ``"gsmn_release"`` (x by the height, y by the width: what GSMN's released models were
            trained with, its ``data.py`` before ``dcc0f61``).
    """

    def __init__(
        self,
        split: PrecompSplit,
        captions: CaptionSet,
        vocab: Vocabulary,
        *,
        max_words: int,
        graph_provider: Optional[GraphProvider] = None,
        scene_graphs: bool = False,
        scene_graph_source: str = ORACLE,
        scene_graph_flip: bool = False,
        scene_graph_limits: SceneGraphLimits = SceneGraphLimits(),
        visual_scene_graphs: bool = True,
        relation_swap_negatives: bool = False,
        symmetric_predicates: Sequence[str] = SYMMETRIC_PREDICATES,
        swap_predicates: Optional[Sequence[str]] = None,
        transforms: Sequence[CaptionTransform] = (),
        tokenizer: str = "words",
        boundary_tokens: bool = False,
        id_words: Optional[list[str]] = None,
        box_normalization: str = "size",
    ) -> None:
        caption_tokens = CaptionTokenizer(tokenizer, boundary_tokens=boundary_tokens, max_words=max_words, id_words=id_words)
        if box_normalization not in ("size", "gsmn_release"):
            raise ValueError(f"box_normalization {box_normalization!r}: choose 'size' or 'gsmn_release'")
        if graph_provider is not None and not caption_tokens.is_default():
            raise ValueError(
                f"tokenizer {tokenizer!r} with boundary_tokens={boundary_tokens}: the graph store indexes the project's "
                "own tokens (tokenizer 'words', no boundary tokens); unset data.graph_store or the release tokenisation"
            )
        if (scene_graphs or relation_swap_negatives) and graph_provider is None:
            raise ValueError(
                "scene graphs and relation-swap negatives need the parsed captions of a graph store (set data.graph_store)"
            )
        self.split = split
        self.set = captions
        self.vocab = vocab
        self.max_words = max_words
        self.graph_provider = graph_provider
        self.scene_graphs = scene_graphs
        self.limits = scene_graph_limits
        self.relation_swap_negatives = relation_swap_negatives
        self.transforms = list(transforms)
        source = split.captions_path if captions.name == split.split else captions.name
        self.tokens: list[list[str]] = []
        for k, c in enumerate(captions.captions):
            try:
                toks = caption_tokens(c)
            except ValueError as err:
                raise DataFormatError(f"{source}:{k + 1}: {err}") from None
            if not toks:
                raise DataFormatError(f"{source}:{k + 1}: caption has no words ({c!r}); fill or fix that line")
            self.tokens.append(toks)
        self.token_ids = [torch.tensor(vocab.encode(t), dtype=torch.long) for t in self.tokens]
        self.encoded = {tr.field: [tr.encode(t) for t in self.tokens] for tr in self.transforms}
        self.boxes: Optional[Tensor] = None
        if split.boxes is not None:
            # normalised once, at load time (GSMN's release divided in place on every read)
            sizes = torch.from_numpy(np.array(split.sizes))
            if box_normalization == "gsmn_release":  # x / height, y / width (the released GSMN models' data)
                sizes = sizes.flip(-1)
            self.boxes = normalize_boxes(torch.from_numpy(np.array(split.boxes, dtype=np.float32)), sizes)

        self.text_graphs: Optional[list[dict[str, Tensor]]] = None
        self.image_graphs: Optional[dict[int, dict[str, Tensor]]] = None
        self.swap_tokens: Optional[list[Optional[list[str]]]] = None
        if scene_graphs or relation_swap_negatives:
            parsed = [graph_provider.parsed(captions.name, k, len(t)) for k, t in enumerate(self.tokens)]
            if scene_graphs:
                lim = scene_graph_limits
                self.text_graphs = [
                    text_graph_index(
                        p, max_objects=lim.text_objects, max_relations=lim.text_relations,
                        max_predicate_words=lim.predicate_words, max_tokens=max_words,
                        max_attributes=lim.attributes, where=f"{source}:{k + 1}",
                    )
                    for k, p in enumerate(parsed)
                ]
                # objects without a region index are matched to a region by IoU with the pixel boxes
                self.image_graphs = None if not visual_scene_graphs else {
                    i: visual_graph_index(
                        graph_provider.image(split.split, i, scene_graph_source), num_regions=split.num_regions,
                        max_objects=lim.image_objects, max_relations=lim.image_relations,
                        region_boxes=None if split.boxes is None else torch.from_numpy(np.array(split.boxes[i])),
                    )
                    for i in sorted(set(int(i) for i in captions.image_index))
                }
                if scene_graph_flip and self.image_graphs is not None:
                    for g in self.image_graphs.values():
                        g["rel_subj"], g["rel_obj"] = g["rel_obj"], g["rel_subj"]
            if relation_swap_negatives:
                symmetric, only = tuple(symmetric_predicates), None if swap_predicates is None else tuple(swap_predicates)
                self.swap_tokens = [
                    relation_swap(t, p.scene_graph, symmetric=symmetric, only=only, choice=k)
                    for k, (t, p) in enumerate(zip(self.tokens, parsed))
                ]
                self.swap_encoded = {
                    tr.field: [None if s is None else tr.encode(s) for s in self.swap_tokens] for tr in self.transforms
                }

    def __len__(self) -> int:
        return len(self.set.captions)

    def __getitem__(self, k: int) -> dict:
        i = int(self.set.image_index[k])
        return self._item(k, torch.from_numpy(self.split.read_images(np.array([i]))[0]))

    def __getitems__(self, ks: list[int]) -> list[dict]:
        """The items of a batch (the DataLoader's batched fetch): the features of all its images are
        read into one ``(B, R, D)`` block (:meth:`~kgitm.data.precomp.PrecompSplit.read_images`), which
        the collator then uses as it is (one copy of the batch's features instead of two)."""
        ks = [int(k) for k in ks]
        rows = np.asarray([int(self.set.image_index[k]) for k in ks])
        block = torch.from_numpy(self.split.read_images(rows))
        items = [self._item(k, block[b]) for b, k in enumerate(ks)]
        for b, it in enumerate(items):
            it["image_block"] = (block, b)
        return items

    def _item(self, k: int, image: Tensor) -> dict:
        i = int(self.set.image_index[k])
        item: dict[str, Any] = {
            "image": image,
            "image_index": i,
            "caption_index": k,
            "words": self.tokens[k],
            "token_ids": self.token_ids[k],
            "encoded": {f: v[k] for f, v in self.encoded.items()},
        }
        if self.boxes is not None:
            item["boxes"] = self.boxes[i]
        if self.graph_provider is not None:
            item["adjacency"] = self.graph_provider.adjacency(self.set.name, k, len(self.tokens[k]))
        if self.text_graphs is not None:
            item["text_graph"] = self.text_graphs[k]
        if self.image_graphs is not None:
            item["image_graph"] = self.image_graphs[i]
        if self.swap_tokens is not None:
            swapped = self.swap_tokens[k]
            item["swap_words"] = swapped
            item["swap_token_ids"] = None if swapped is None else torch.tensor(self.vocab.encode(swapped), dtype=torch.long)
            item["swap_encoded"] = {f: v[k] for f, v in self.swap_encoded.items()}
        return item

    def collator(self) -> "Collator":
        """The collate function for this dataset's items."""
        return Collator(self.limits, self.transforms)


class Collator:
    """Stacks images and pads captions to the longest in the batch: items -> :class:`~kgitm.core.batch.Batch`.

    All-zero regions become padding (``region_mask`` false). With relation-swap negatives
    ``Batch.swapped`` holds each caption's swapped copy at the same positions (a caption without a
    swap repeats its own words, and ``swap_valid`` is false for it).

    Args:
        limits: padding limits of the scene-graph tensors.
        transforms: the dataset's caption transforms (their ``collate`` pads their fields).
    """

    def __init__(self, limits: SceneGraphLimits = SceneGraphLimits(), transforms: Sequence[CaptionTransform] = ()) -> None:
        self.limits = limits
        self.transforms = list(transforms)

    def _captions(self, items: list[dict], words: list[list[str]], token_ids: list[Tensor], encoded: list[dict], graph) -> CaptionInputs:
        lengths = torch.tensor([len(w) for w in words], dtype=torch.long)
        width = int(lengths.max())
        fields = {tr.field: tr.collate([e[tr.field] for e in encoded], width) for tr in self.transforms}
        adjacency = None
        if "adjacency" in items[0]:
            adjacency = torch.zeros(len(items), width, width, dtype=torch.bool)
            for b, it in enumerate(items):
                n = it["adjacency"].shape[0]
                adjacency[b, :n, :n] = it["adjacency"]
        return CaptionInputs(
            token_ids=stack_padded(token_ids, width, 0),
            word_mask=torch.arange(width)[None, :] < lengths[:, None],
            lengths=lengths,
            words=words,
            adjacency=adjacency,
            graph=graph,
            **fields,
        )

    def __call__(self, items: list[dict]) -> Batch:
        block = items[0].get("image_block", (None, 0))[0]
        if block is not None and len(block) == len(items) and all(
            it.get("image_block", (None, -1))[0] is block and it["image_block"][1] == b for b, it in enumerate(items)
        ):
            features = block  # read as one block by CaptionImageDataset.__getitems__, in this order
        else:
            features = torch.stack([it["image"] for it in items])
        image_graph = text_graph = None
        if "text_graph" in items[0]:
            lim = self.limits
            text_graph = pad_graph_indices([it["text_graph"] for it in items], max_objects=lim.text_objects, max_relations=lim.text_relations)
        if "image_graph" in items[0]:
            lim = self.limits
            image_graph = pad_graph_indices([it["image_graph"] for it in items], max_objects=lim.image_objects, max_relations=lim.image_relations)
        images = ImageInputs(
            features=features,
            region_mask=(features != 0).any(-1),  # all-zero regions are padding (features are finite)
            boxes=torch.stack([it["boxes"] for it in items]) if "boxes" in items[0] else None,
            graph=image_graph,
        )
        words = [it["words"] for it in items]
        captions = self._captions(items, words, [it["token_ids"] for it in items], [it.get("encoded", {}) for it in items], text_graph)
        batch = Batch(
            images=images,
            captions=captions,
            image_index=torch.tensor([it["image_index"] for it in items], dtype=torch.long),
            caption_index=torch.tensor([it["caption_index"] for it in items], dtype=torch.long),
        )
        if "swap_words" in items[0]:
            valid = [it["swap_words"] is not None for it in items]
            batch.swap_valid = torch.tensor(valid, dtype=torch.bool)
            batch.swapped = self._captions(
                items,
                [it["swap_words"] if ok else it["words"] for it, ok in zip(items, valid)],
                [it["swap_token_ids"] if ok else it["token_ids"] for it, ok in zip(items, valid)],
                [it["swap_encoded"] if ok else it["encoded"] for it, ok in zip(items, valid)],
                text_graph,
            )
        return batch


def make_batch(
    features: Tensor,
    captions: Sequence[str],
    vocab: Vocabulary,
    *,
    transforms: Sequence[CaptionTransform] = (),
    boxes: Optional[Tensor] = None,
    max_words: Optional[int] = None,
    tokenizer: str = "words",
    boundary_tokens: bool = False,
) -> Batch:
    """A :class:`~kgitm.core.batch.Batch` of ``B`` raw captions, caption ``b`` with image ``b`` (for a
    notebook or a test; the datasets do the same per caption set).

    Args:
        features: ``(B, R, F)`` region features.
        captions: ``B`` caption strings.
        vocab: the model's vocabulary.
        transforms: the model's caption transforms (:meth:`kgitm.models.MatchingModel.caption_transforms`).
        boxes: ``(B, R, 4)`` normalised corner boxes, or ``None``.
        max_words: truncate captions to this many tokens (default: no truncation).
        tokenizer, boundary_tokens: the caption tokenisation (as :class:`CaptionImageDataset`).
    """
    if len(captions) != features.shape[0]:
        raise ValueError(f"make_batch: {len(captions)} captions for {features.shape[0]} images; give one image per caption")
    items = []
    caption_tokens = CaptionTokenizer(tokenizer, boundary_tokens=boundary_tokens, max_words=max_words)
    for b, caption in enumerate(captions):
        tokens = caption_tokens(caption)
        if not tokens:
            raise DataFormatError(f"caption {b} has no words ({caption!r})")
        item = {
            "image": features[b], "image_index": b, "caption_index": b, "words": tokens,
            "token_ids": torch.tensor(vocab.encode(tokens), dtype=torch.long),
            "encoded": {tr.field: tr.encode(tokens) for tr in transforms},
        }
        if boxes is not None:
            item["boxes"] = boxes[b]
        items.append(item)
    return Collator(transforms=transforms)(items)
