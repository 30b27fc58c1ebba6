"""Scene graphs as index tensors (no features yet): what SGM's encoders gather features with.

The matchers that work on scene graphs (SGM) receive the graph structure of a block as padded index
tensors (``ImageInputs.graph`` / ``CaptionInputs.graph``, then ``EncodedImages.extra`` /
``EncodedCaptions.extra``); the features are gathered at those indices inside the matcher. The work
has two steps, both pure functions:

* **Per graph, once** (the data pipeline does this when it opens a split): :func:`text_graph_index`
  and :func:`visual_graph_index` turn one parsed caption or one visual scene graph into small index
  tensors. All string work happens here: finding a relation's predicate words among the caption's
  tokens (:func:`find_predicate_tokens`), mapping predicate labels to ids.
* **Per batch**: :func:`pad_graph_indices` pads a block of those to fixed slot counts; tensor work
  only.

:func:`collate_text_scene_graphs` and :func:`collate_visual_scene_graphs` do both steps at once.

Conventions shared by both sides:

* Object slots ``0 .. O - 1`` follow the order of the graph's objects. Objects beyond
  ``max_objects`` are dropped, and so are the relations that touch a dropped object; relations
  beyond ``max_relations`` are dropped. Padding slots hold index ``0`` (``rel_label``: ``-1``) and a
  false mask.
* ``rel_subj`` / ``rel_obj`` are object *slots* (not object ids), so ``obj_*[n, rel_subj[n, t]]`` is
  the subject of relation ``t`` of graph ``n``. A relation marked valid always points at valid slots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor

from kgitm.core.geometry import box_iou
from kgitm.core.lexicon import inflection_candidates
from kgitm.graphs.scene_graph_json import VisualSceneGraph
from kgitm.graphs.types import ParsedCaption

#: Padding value of each index tensor that is not 0.
_PAD_VALUE = {"rel_label": -1}


def find_predicate_tokens(
    tokens: Sequence[str],
    predicate: str,
    subject_span: tuple[int, int],
    object_span: tuple[int, int],
) -> list[int]:
    """Token positions of a relation's predicate words in its caption.

    Each word of the predicate lemma (``"next to"`` has two) is matched against the caption tokens
    by exact form or by a suffix-stripped lemma (:func:`kgitm.core.lexicon.inflection_candidates`:
    ``riding`` matches ``ride`` and spaCy's ``rid``, ``sits`` matches ``sit``, ``is`` matches ``be``).
    Tokens inside the subject or object span are never used. Among several matches the one closest
    to the gap between the subject and object spans is taken (distance 0 inside the gap, ties to the
    earlier token), and each token is used at most once.

    Returns:
        Sorted positions; empty when no word of the predicate occurs in the caption (the collation
        then marks the predicate as unknown).
    """
    a = min(subject_span[1], object_span[1])
    b = max(subject_span[0], object_span[0])
    blocked = set(range(*subject_span)) | set(range(*object_span))

    def distance(i: int) -> int:
        if a <= i < b:
            return 0
        return min(abs(i - a), abs(i - (b - 1)))

    used: list[int] = []
    for word in predicate.lower().split():
        matches = [
            i for i, tok in enumerate(tokens)
            if i not in blocked and i not in used and (tok == word or word in inflection_candidates(tok))
        ]
        if matches:
            used.append(min(matches, key=lambda i: (distance(i), i)))
    return sorted(used)


def text_graph_index(
    parsed: ParsedCaption,
    *,
    max_objects: int,
    max_relations: int,
    max_predicate_words: int,
    max_tokens: Optional[int] = None,
    max_attributes: int = 0,
    where: str = "caption 0",
) -> dict[str, Tensor]:
    """The index tensors of one textual scene graph.

    Object ``o`` is represented by the position of its head token, the **last token of its span**
    (the span is the noun-phrase head, usually one token; for a compound head such as
    ``"tennis racket"`` the last token is the head noun). The text encoder's word feature at that
    position becomes the object node.

    A relation's predicate is represented by the positions of its words in the caption
    (:func:`find_predicate_tokens`). When none of its words occurs (a parser-normalised predicate such
    as ``"wear"`` for the caption word ``"in"``), the relation is kept with an all-false
    ``rel_pred_mask`` row: this is the **unknown-predicate marker**, and the matcher uses a learned
    unknown-predicate vector for it. Only the first ``P`` predicate words found are kept.

    Args:
        parsed: the parsed caption.
        max_objects: object slots ``O``.
        max_relations: relation slots ``T``.
        max_predicate_words: predicate word slots ``P`` per relation.
        max_tokens: when the text encoder sees only the first ``L`` tokens (truncated captions), pass
            ``L``: objects whose head lies beyond it are dropped (with their relations) and predicate
            words beyond it are ignored. (default: ``None``, no truncation)
        max_attributes: attribute slots ``A`` per object (CORA's entity composer). With ``A > 0`` each
            attribute lemma is located among the tokens like a one-word predicate next to its object
            (:func:`find_predicate_tokens` with the object span on both sides, the last match kept);
            an attribute whose word is not in the (truncated) caption is dropped, and so are those
            beyond the first ``A`` of an object. (default: ``0``, no attribute tensors)
        where: names the caption in error messages (file and line).

    Returns:
        ``obj_token (o,)``, ``rel_subj (t,)`` / ``rel_obj (t,)`` object slots, ``rel_pred_tokens (t, P)``
        and ``rel_pred_mask (t, P)``, with ``o <= O`` kept objects and ``t <= T`` kept relations; with
        ``max_attributes > 0`` also ``obj_attr_token (o, A)`` and ``obj_attr_mask (o, A)``.

    Raises:
        ValueError: an object span lies outside the caption's tokens, or a relation points at an
            object index the caption does not have (the message starts with ``where``).
    """
    tokens = parsed.dependency.tokens
    objects = parsed.scene_graph.objects
    limit = len(tokens) if max_tokens is None else min(len(tokens), max_tokens)
    slot: dict[int, int] = {}
    obj_token: list[int] = []
    for k, obj in enumerate(objects):
        start, end = obj.span
        if not 0 <= start < end <= len(tokens):
            raise ValueError(
                f"{where}: object {k} ({obj.name!r}) has span {tuple(obj.span)} outside its "
                f"{len(tokens)} tokens; re-run the parser with the project tokenisation"
            )
        if len(slot) < max_objects and end - 1 < limit:
            slot[k] = len(slot)
            obj_token.append(end - 1)
    subj: list[int] = []
    obj: list[int] = []
    pred_tokens = torch.zeros(max_relations, max_predicate_words, dtype=torch.long)
    pred_mask = torch.zeros(max_relations, max_predicate_words, dtype=torch.bool)
    for r, (s, predicate, o) in enumerate(parsed.scene_graph.relations):
        if not (0 <= s < len(objects) and 0 <= o < len(objects)):
            raise ValueError(
                f"{where}: relation {r} {(s, predicate, o)} points at an object the caption does "
                f"not have (it has {len(objects)} objects); fix the parsed graph"
            )
        if len(subj) >= max_relations or s not in slot or o not in slot:
            continue
        t = len(subj)
        subj.append(slot[s])
        obj.append(slot[o])
        positions = find_predicate_tokens(tokens[:limit], predicate, objects[s].span, objects[o].span)
        for p, pos in enumerate(positions[:max_predicate_words]):
            pred_tokens[t, p] = pos
            pred_mask[t, p] = True
    t = len(subj)
    out = {
        "obj_token": torch.tensor(obj_token, dtype=torch.long),
        "rel_subj": torch.tensor(subj, dtype=torch.long),
        "rel_obj": torch.tensor(obj, dtype=torch.long),
        "rel_pred_tokens": pred_tokens[:t].clone(),
        "rel_pred_mask": pred_mask[:t].clone(),
    }
    if max_attributes > 0:
        attr_tokens = torch.zeros(len(obj_token), max_attributes, dtype=torch.long)
        attr_mask = torch.zeros(len(obj_token), max_attributes, dtype=torch.bool)
        for a, (o, lemma) in enumerate(parsed.scene_graph.attributes):
            if not 0 <= o < len(objects):
                raise ValueError(
                    f"{where}: attribute {a} {(o, lemma)} points at an object the caption does not have "
                    f"(it has {len(objects)} objects); fix the parsed graph"
                )
            if o not in slot:
                continue
            k = int(attr_mask[slot[o]].sum())
            positions = find_predicate_tokens(tokens[:limit], lemma, objects[o].span, objects[o].span)
            if k < max_attributes and positions:
                attr_tokens[slot[o], k] = positions[-1]
                attr_mask[slot[o], k] = True
        out["obj_attr_token"] = attr_tokens
        out["obj_attr_mask"] = attr_mask
    return out


def visual_graph_index(
    graph: VisualSceneGraph,
    *,
    num_regions: int,
    max_objects: int,
    max_relations: int,
    region_boxes: Optional[Tensor | Sequence[Any]] = None,
    predicate_vocab: Optional[Mapping[str, int] | Sequence[str]] = None,
) -> dict[str, Tensor]:
    """The index tensors of one visual scene graph.

    Each object points at the row of the image's region feature array that represents it: its
    ``region_index`` when it has one (SynthScenes ground truth, Neural Motifs on the BUTD regions).
    When an object has no region index (``None`` or negative), its box is compared with the image's
    region boxes (``region_boxes``, same coordinate frame as the object boxes) and the region with the
    highest IoU is used (ties to the lower index). Relation embeddings are built by the matcher from
    the subject and object region features and their geometry, so predicate labels are optional.

    Args:
        graph: the image's scene graph (:func:`kgitm.graphs.scene_graph_json.parse_vg_image` reads a
            Visual-Genome-style dict into one).
        num_regions: region rows ``R`` of the image; a region index outside ``[0, R)`` is an error.
        max_objects: object slots ``O``.
        max_relations: relation slots ``T``.
        region_boxes: the image's region corner boxes ``(R, 4)`` in the frame of the object boxes (for
            pixel-corner graphs, the pixel ``{split}_ims_bbx.npy`` row), needed only when some object
            lacks a region index. (default: ``None``)
        predicate_vocab: predicate label vocabulary (``{label: id}`` or a list of labels); when given the
            output has ``rel_label`` (``-1`` for predicates outside it). (default: ``None``)

    Returns:
        ``obj_region (o,)``, ``rel_subj (t,)`` / ``rel_obj (t,)`` object slots, and with a vocabulary
        ``rel_label (t,)``.

    Raises:
        ValueError: an object has neither a region index nor a box to match (or no ``region_boxes``
            were given), or a region index is out of range; the message names the image id.
    """
    vocab: Optional[Mapping[str, int]] = None
    if predicate_vocab is not None:
        vocab = predicate_vocab if isinstance(predicate_vocab, Mapping) else {w: i for i, w in enumerate(predicate_vocab)}
    image_id = graph.image_id
    n_objects = graph.num_objects
    regions = graph.region_index or [None] * n_objects
    kept = min(n_objects, max_objects)
    obj_region: list[int] = []
    for k in range(kept):
        region = regions[k]
        if region is None or region < 0:
            if region_boxes is None:
                raise ValueError(
                    f"image {image_id}: object {k} has no region_index and no region_boxes were given to "
                    "match its box to a region; add region indices or pass region_boxes"
                )
            cand = torch.as_tensor(region_boxes, dtype=torch.float64).reshape(-1, 4)[:num_regions]
            region = int(box_iou(graph.boxes[k].to(torch.float64), cand).argmax())
        if not 0 <= region < num_regions:
            raise ValueError(
                f"image {image_id}: object {k} has region_index {region}, outside [0, {num_regions}); "
                "the scene graph does not belong to these region features"
            )
        obj_region.append(int(region))
    for r, (s, _, o) in enumerate(graph.relations):
        for role, idx in (("subject", s), ("object", o)):
            if not 0 <= idx < n_objects:
                raise ValueError(
                    f"image {image_id}: relation {r} has {role} index {idx}, which is not among its "
                    f"{n_objects} objects; fix the scene graph or drop the relation"
                )
    subj, obj, labels = [], [], []
    for s, predicate, o in graph.relations:
        if len(subj) >= max_relations:
            break
        if s >= kept or o >= kept:
            continue
        subj.append(s)
        obj.append(o)
        if vocab is not None:
            labels.append(vocab.get(predicate, -1))
    out = {
        "obj_region": torch.tensor(obj_region, dtype=torch.long),
        "rel_subj": torch.tensor(subj, dtype=torch.long),
        "rel_obj": torch.tensor(obj, dtype=torch.long),
    }
    if vocab is not None:
        out["rel_label"] = torch.tensor(labels, dtype=torch.long)
    return out


def pad_graph_indices(items: Sequence[Mapping[str, Tensor]], *, max_objects: int, max_relations: int) -> dict[str, Tensor]:
    """Stack the index tensors of ``N`` graphs, padding objects to ``O`` and relations to ``T`` slots.

    Keys starting with ``obj_`` are per object, ``rel_`` per relation; ``obj_mask (N, O)`` and
    ``rel_mask (N, T)`` are added (true for real slots).

    Shapes:
        items: per graph, ``obj_* (o, ...)`` and ``rel_* (t, ...)``. Output: ``obj_* (N, O, ...)``,
        ``rel_* (N, T, ...)`` and the masks.
    """
    if not items:
        raise ValueError("pad_graph_indices needs at least one graph")
    n = len(items)
    out: dict[str, Tensor] = {}
    lengths: dict[str, Tensor] = {}
    for key in items[0]:
        slots = max_objects if key.startswith("obj_") else max_relations
        first = items[0][key]
        dense = torch.full((n, slots, *first.shape[1:]), _PAD_VALUE.get(key, 0), dtype=first.dtype)
        count = torch.tensor([len(it[key]) for it in items], dtype=torch.long)
        if int(count.sum()):
            rows = torch.repeat_interleave(torch.arange(n), count)
            cols = torch.cat([torch.arange(int(c)) for c in count])
            dense[rows, cols] = torch.cat([it[key] for it in items])
        out[key] = dense
        lengths["obj" if key.startswith("obj_") else "rel"] = count
    for prefix, slots in (("obj", max_objects), ("rel", max_relations)):
        if prefix in lengths:
            out[f"{prefix}_mask"] = torch.arange(slots).unsqueeze(0) < lengths[prefix].unsqueeze(1)
    return out


def collate_text_scene_graphs(
    parsed: Sequence[ParsedCaption],
    *,
    max_objects: int,
    max_relations: int,
    max_predicate_words: int,
    max_tokens: Optional[int] = None,
    max_attributes: int = 0,
) -> dict[str, Tensor]:
    """Pad the textual scene graphs of ``M`` captions into index tensors (:func:`text_graph_index` then
    :func:`pad_graph_indices`).

    Returns:
        ``obj_token (M, O)`` long, ``obj_mask (M, O)`` bool, ``rel_subj (M, T)`` / ``rel_obj (M, T)``
        long object slots, ``rel_pred_tokens (M, T, P)`` long, ``rel_pred_mask (M, T, P)`` bool,
        ``rel_mask (M, T)`` bool; with ``max_attributes > 0`` also ``obj_attr_token (M, O, A)`` long and
        ``obj_attr_mask (M, O, A)`` bool.
    """
    items = [
        text_graph_index(
            p, max_objects=max_objects, max_relations=max_relations, max_predicate_words=max_predicate_words,
            max_tokens=max_tokens, max_attributes=max_attributes, where=f"caption {m}",
        )
        for m, p in enumerate(parsed)
    ]
    return pad_graph_indices(items, max_objects=max_objects, max_relations=max_relations)


def collate_visual_scene_graphs(
    graphs: Sequence[VisualSceneGraph],
    *,
    num_regions: int,
    max_objects: int,
    max_relations: int,
    region_boxes: Optional[Tensor | Sequence[Any]] = None,
    predicate_vocab: Optional[Mapping[str, int] | Sequence[str]] = None,
) -> dict[str, Tensor]:
    """Pad the visual scene graphs of ``N`` images into index tensors (:func:`visual_graph_index` then
    :func:`pad_graph_indices`); ``region_boxes`` is ``(N, R, 4)`` when given.

    Returns:
        ``obj_region (N, O)`` long, ``obj_mask (N, O)`` bool, ``rel_subj (N, T)`` / ``rel_obj (N, T)``
        long object slots, ``rel_mask (N, T)`` bool, and with a vocabulary ``rel_label (N, T)`` long.
    """
    items = [
        visual_graph_index(
            g, num_regions=num_regions, max_objects=max_objects, max_relations=max_relations,
            region_boxes=None if region_boxes is None or n >= len(region_boxes) else region_boxes[n],
            predicate_vocab=predicate_vocab,
        )
        for n, g in enumerate(graphs)
    ]
    return pad_graph_indices(items, max_objects=max_objects, max_relations=max_relations)
