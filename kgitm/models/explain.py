"""One image-caption pair explained: what the matcher aligned, and where the pair ranks.

:func:`explain_pair` builds the pair exactly as the data pipeline builds an evaluation batch (the
run's vocabulary, caption transforms and graph stores; a free text is parsed with the spaCy model of
the run's graph store), encodes it with the run's model and asks the matcher for its alignments
(:meth:`kgitm.matchers.base.Matcher.alignments`: the tensors ``forward`` computed, not a
re-computation). The pair's rank among all images of the split (for the caption) and among all
captions (for the image) comes from the run's saved similarity matrix when it has one for the split,
else from scoring the caption against every image and the image against every caption.

The result is a plain JSON-ready dict (:func:`explanation_json`); :mod:`kgitm.viz.explain` draws it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from kgitm.core.io import DataFormatError
from kgitm.core.text import tokenize
from kgitm.graphs.types import ParsedCaption
from kgitm.models.matching import EncodedSplit, MatchingModel
from kgitm.pipeline.dataset import CaptionSet

__all__ = ["PairGraphs", "explain_pair", "rank_of", "split_encodings"]

#: extensions tried, in order, for an image file named by the split's image id
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".PNG")
#: retrieved items listed per direction
TOP_K = 5


class PairGraphs:
    """The graph structure of one caption for :class:`~kgitm.pipeline.dataset.CaptionImageDataset`:
    the stored graphs of caption ``index`` of the split (the dataset asks for item 0), or the graphs of a
    freshly parsed caption; images are served from the stores unchanged.

    Args:
        stores: the run's :class:`~kgitm.pipeline.graph_provider.GraphProvider`, or ``None``.
        index: the caption's line in the split (``None`` for a parsed text).
        parsed: the parsed free text, or ``None``.
    """

    def __init__(self, stores: Any, *, index: Optional[int], parsed: Optional[ParsedCaption]) -> None:
        self.stores, self.index, self.parsed_caption = stores, index, parsed

    def parsed(self, name: str, index: int, num_tokens: int) -> ParsedCaption:
        return self.parsed_caption if self.parsed_caption is not None else self.stores.parsed(name, self.index, num_tokens)

    def adjacency(self, name: str, index: int, num_tokens: int) -> Tensor:
        if self.parsed_caption is None:
            return self.stores.adjacency(name, self.index, num_tokens)
        adj = torch.zeros(num_tokens, num_tokens, dtype=torch.bool)
        for h, d in self.parsed_caption.dependency.edges:
            if h != d and h < num_tokens and d < num_tokens:
                adj[h, d] = adj[d, h] = True
        return adj

    def image(self, split: str, index: int, source: str = "oracle"):
        return self.stores.image(split, index, source)


def rank_of(scores: np.ndarray, target: int) -> int:
    """0-based rank of item ``target`` among ``scores`` with :mod:`kgitm.eval.metrics`' tie rule
    (strictly higher scores, plus equal scores at a lower index)."""
    s = scores[target]
    return int(np.count_nonzero(scores > s) + np.count_nonzero(scores[:target] == s))


def split_encodings(model: MatchingModel, dm: Any, split: str) -> EncodedSplit:
    """Every image and caption of ``split`` encoded once (for ranks when the run saved no matrix)."""
    opened = dm.open_split(split)
    loader = dm._loader(dm.dataset(opened, dm.caption_set(opened)), train=False, workers=False)
    return model.encode_split(loader, device=next(model.parameters()).device)


def _spacy_model(dm: Any) -> Optional[str]:
    """The spaCy model the run's caption graph store was parsed with (``None``: the parser's default)."""
    import json

    graphs = getattr(dm, "_graphs", None)
    if graphs is None:
        return None
    try:
        prov = json.loads((graphs.store_root / dm.hparams.test_split / "text" / "provenance.json").read_text())
    except (OSError, ValueError):
        return None
    return (prov.get("parser") or {}).get("spacy_model")


@functools.lru_cache(maxsize=2)
def _parser(name: str):
    from kgitm.graphs.text_parser import TextGraphParser

    return TextGraphParser(name)


def _parse(text: str, dm: Any) -> Optional[ParsedCaption]:
    """The dependency and scene graphs of ``text`` (``None`` when no spaCy model is installed); the
    parser is loaded once per process."""
    from kgitm.graphs.text_parser import DEFAULT_SPACY_MODEL, SpacyModelMissingError

    try:
        return _parser(_spacy_model(dm) or DEFAULT_SPACY_MODEL).parse_one(text)
    except (SpacyModelMissingError, OSError):
        return None


def find_image_file(image_dir: Optional[Path], image_id: Optional[str]) -> Optional[Path]:
    """The file of image ``image_id`` in ``image_dir`` (the id itself, or the id plus an image extension)."""
    if image_dir is None or image_id is None:
        return None
    for name in (image_id, *(image_id + e for e in IMAGE_EXTENSIONS)):
        if (Path(image_dir) / name).is_file():
            return Path(image_dir) / name
    return None


def _plain(x: Tensor) -> Any:
    """A tensor as nested Python numbers (float32 values kept exactly)."""
    x = x.detach().cpu()
    return x.tolist() if x.dtype == torch.bool or not x.is_floating_point() else x.float().tolist()


@torch.no_grad()
def explain_pair(
    model: MatchingModel,
    dm: Any,
    *,
    split: str,
    image: int,
    caption: Optional[int] = None,
    text: Optional[str] = None,
    sims: Optional[np.ndarray] = None,
    encoded: Optional[EncodedSplit] = None,
    image_dir: Optional[Path] = None,
    top_k: int = TOP_K,
) -> dict[str, Any]:
    """Explain image ``image`` of ``split`` with caption ``caption`` of the split, or a free ``text``.

    Args:
        model: the run's model (eval mode).
        dm: the run's data module (:class:`~kgitm.lit.datamodule.PrecompDataModule`).
        split: the split of the image (and caption).
        image: the image's row in the split.
        caption: the caption's line in the split's caption file (``k * image .. k * image + k - 1`` are
            its own); exactly one of ``caption`` and ``text``.
        text: a free caption instead.
        sims: the run's ``(N_img, N_cap)`` similarity matrix of the split, or ``None``.
        encoded: the split already encoded (:func:`split_encodings`), used when ``sims`` cannot give the
            ranks (a free text, no matrix); ``None`` encodes it here.
        image_dir: folder holding the image files (named by the split's image ids), or ``None``.
        top_k: retrieved items listed per direction.

    Returns:
        A JSON-ready dict: the pair, its words and regions (pixel boxes, labels from the visual scene
        graph), the matcher's ``alignments`` (nested lists, exactly its float32 values), ``score`` and
        ``ranks`` (1-based), ``top_images`` / ``top_captions``, the dependency graph, both scene graphs,
        and the knowledge concepts that fired.

    Raises:
        ValueError: the image or caption is outside the split, or neither/both of caption and text.
    """
    opened = dm.open_split(split)
    if not 0 <= image < opened.num_images:
        raise ValueError(f"image {image} is outside the {split} split (0..{opened.num_images - 1})")
    if (caption is None) == (text is None):
        raise ValueError("give exactly one of a caption index (--caption) and a free text (--text)")
    if caption is not None and not 0 <= caption < opened.num_captions:
        raise ValueError(f"caption {caption} is outside the {split} split's {opened.num_captions} captions (0..{opened.num_captions - 1})")
    caption_text = opened.captions[caption] if caption is not None else str(text)
    stores = getattr(dm, "_graphs", None)
    parsed: Optional[ParsedCaption] = None
    if caption is not None and stores is not None:
        parsed = stores.parsed(split, caption, len(tokenize(caption_text)[: dm.hparams.max_words]))
        provider = PairGraphs(stores, index=caption, parsed=None)
    else:
        parsed = _parse(caption_text, dm)
        if stores is not None and parsed is None:
            raise ValueError("this run's model reads caption graphs, and a free text needs a spaCy model to parse it (see docs/graphs.md)")
        provider = PairGraphs(stores, index=None, parsed=parsed) if stores is not None else None
    ds = dm.dataset(opened, CaptionSet(split, [caption_text], np.array([image])), graph_provider=provider)
    batch = ds.collator()([ds[0]]).to(next(model.parameters()).device)

    knowledge: dict = {}
    images = model.encode_images(batch.images, knowledge)
    captions = model.encode_captions(batch.captions)
    alignments = model.scorer.alignments(images, captions)
    score = float(alignments["score"])

    # ranks: the caption among all images, the image among all captions
    k = opened.captions_per_image
    saved = sims is not None and caption is not None and sims.shape == (opened.num_images, opened.num_captions)
    if saved:
        column, row = np.asarray(sims[:, caption], dtype=np.float32), np.asarray(sims[image], dtype=np.float32)
        where = "saved similarity matrix"
    else:
        if encoded is None:
            encoded = split_encodings(model, dm, split)
        column = model.similarity(encoded.images, captions.to("cpu"))[:, 0].numpy()
        row = model.similarity(encoded.images.index(slice(image, image + 1)), encoded.captions)[0].numpy()
        where = "computed"
    if caption is None:  # the free text joins the image's captions, after them
        row = np.concatenate([row, np.array([score], dtype=row.dtype)])
        target = len(row) - 1
    else:
        target = caption
    ranks = {
        "image_among_images": rank_of(column, image) + 1, "num_images": int(len(column)),
        "caption_among_captions": rank_of(row, target) + 1, "num_captions": int(len(row)),
        "source": where,
    }
    top_images = [{"image": int(i), "score": float(column[i]), "true": int(i) == image} for i in np.argsort(-column, kind="stable")[:top_k]]
    top_captions = [
        {"caption": int(j), "text": opened.captions[j] if j < opened.num_captions else caption_text, "score": float(row[j]),
         "true": (j < opened.num_captions and j // k == image) or (caption is None and j == target)}
        for j in np.argsort(-row, kind="stable")[:top_k]
    ]

    # regions: pixel boxes, size, labels from the visual scene graph
    mask = batch.images.region_mask[0].cpu()
    r = mask.shape[0]
    size = [float(v) for v in opened.sizes[image]] if opened.sizes is not None else [1.0, 1.0]
    boxes = np.array(opened.boxes[image], dtype=np.float64).tolist() if opened.boxes is not None else [[0.0, 0.0, 0.0, 0.0]] * r
    labels: list[Optional[str]] = [None] * r
    visual = None
    if stores is not None:
        try:
            graph = stores.image(split, image, dm.hparams.scene_graph_source)
        except (DataFormatError, FileNotFoundError):  # a run without visual stores still gets its picture
            graph = None
        if graph is not None:
            visual = _visual_graph(graph, batch.images.graph)
            for obj, region in zip(visual["objects"], visual["object_region"]):
                if 0 <= region < r and labels[region] is None:
                    labels[region] = obj
    words = batch.captions.words[0]
    out: dict[str, Any] = {
        "split": split, "image": int(image), "image_id": opened.ids[image] if opened.ids else None,
        "image_file": str(find_image_file(image_dir, opened.ids[image] if opened.ids else None) or "") or None,
        "image_size": size, "caption": caption, "text": caption_text, "words": list(words),
        "matcher": type(model.matcher).__name__, "fused": type(model.scorer).__name__ if model.scorer is not model.matcher else None,
        "score": score, "ranks": ranks, "top_images": top_images, "top_captions": top_captions,
        "regions": [{"index": i, "box": boxes[i], "label": labels[i], "valid": bool(mask[i])} for i in range(r)],
        "alignments": {name: _plain(v) for name, v in alignments.items()},
        "dependency": None if parsed is None else {
            "tokens": list(parsed.dependency.tokens), "edges": [list(e) for e in parsed.dependency.edges],
            "labels": list(parsed.dependency.labels),
        },
        "text_scene_graph": None if parsed is None else {
            "objects": [o.name for o in parsed.scene_graph.objects],
            "attributes": [[int(o), a] for o, a in parsed.scene_graph.attributes],
            "relations": [[int(s), p, int(o)] for s, p, o in parsed.scene_graph.relations],
        },
        "visual_scene_graph": visual,
        "sgm_text_graph": _index_graph(batch.captions.graph, words),
        "concepts": _concepts(model, batch, knowledge, alignments, words),
    }
    return out


def _visual_graph(graph: Any, index: Optional[dict]) -> dict[str, Any]:
    """The image's scene graph as names, with the region of each object and, when the model read the
    graph (SGM), the object and relation slots it used (the order of ``obj_region`` / ``rel_*``)."""
    regions = list(graph.region_index) if graph.region_index is not None else [-1] * graph.num_objects
    out = {
        "objects": list(graph.labels), "attributes": [list(a) for a in graph.attributes],
        "object_region": [int(x) if x is not None else -1 for x in regions],
        "relations": [[int(s), p, int(o)] for s, p, o in graph.relations],
    }
    if index is not None:
        kept_obj = int(index["obj_mask"][0].sum())
        subj, obj = index["rel_subj"][0], index["rel_obj"][0]
        kept = [(int(s), int(o)) for s, o, m in zip(subj, obj, index["rel_mask"][0]) if m]
        # the slots follow the graph's own order, dropping relations of objects beyond the limit
        names, it = [], iter(p for s, p, o in graph.relations if s < kept_obj and o < kept_obj)
        for _ in kept:
            names.append(next(it, "?"))
        out["slots"] = {"objects": [int(x) for x in index["obj_region"][0][:kept_obj]],
                        "relations": [[s, p, o] for (s, o), p in zip(kept, names)]}
    return out


def _index_graph(index: Optional[dict], words: list[str]) -> Optional[dict[str, Any]]:
    """The textual scene graph as SGM read it: object slots (their head words) and relation slots."""
    if index is None:
        return None
    n_obj = int(index["obj_mask"][0].sum())
    objects = [words[int(t)] for t in index["obj_token"][0][:n_obj]]
    relations = []
    for t in range(int(index["rel_mask"][0].sum())):
        pred = " ".join(words[int(p)] for p, m in zip(index["rel_pred_tokens"][0][t], index["rel_pred_mask"][0][t]) if m)
        relations.append([int(index["rel_subj"][0][t]), pred or "(unknown predicate)", int(index["rel_obj"][0][t])])
    return {"objects": objects, "object_token": [int(t) for t in index["obj_token"][0][:n_obj]], "relations": relations}


def _concepts(model: MatchingModel, batch: Any, details: dict, alignments: dict, words: list[str], top: int = 3) -> Optional[dict]:
    """The knowledge concepts that fired: each word's mapped concepts, each region's strongest soft
    concepts (graph mode) and the consensus distributions' strongest (consensus mode)."""
    k = model.knowledge
    if k is None:
        return None
    names = list(k.concepts)
    out: dict[str, Any] = {"words": [], "regions": [], "image_consensus": [], "caption_consensus": []}
    ids = batch.captions.concept_ids
    if ids is not None:
        for j, w in enumerate(words):
            fired = [names[c] for c in ids[0, j].tolist() if c >= 0]
            if fired:
                out["words"].append({"word": w, "position": j, "concepts": fired})
    attn = details.get("region_concepts")
    if attn is not None:
        for i, row in enumerate(attn[0]):
            if bool(batch.images.region_mask[0, i]):
                w, c = row.topk(min(top, row.numel()))
                out["regions"].append({"region": i, "concepts": [[names[int(x)], float(v)] for v, x in zip(w, c)]})
    for key, name in (("image_concepts", "image_consensus"), ("caption_concepts", "caption_consensus")):
        if key in alignments:
            v = alignments[key]
            w, c = v.topk(min(top * 2, v.numel()))
            out[name] = [[names[int(x)], float(s)] for s, x in zip(w, c)]
    return out
