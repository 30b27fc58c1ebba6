"""Collation of scene graphs into padded index tensors (no features yet).

The matchers that work on scene graphs (SGM) receive the graph structure of a block as padded
index tensors inside :attr:`EncodedImages.extra` / :attr:`EncodedCaptions.extra`; the features are
gathered at those indices inside the matcher. The functions here are pure: graphs in, tensors out.

Conventions shared by both sides:

* Object slots ``0 .. O - 1`` follow the order of the graph's objects. Objects beyond
  ``max_objects`` are dropped, and so are the relations that touch a dropped object; relations
  beyond ``max_relations`` are dropped. Padding slots hold index ``0`` and a false mask.
* ``rel_subj`` / ``rel_obj`` are object *slots* (not object ids), so ``obj_*[n, rel_subj[n, t]]`` is
  the subject of relation ``t`` of graph ``n``. A relation marked valid always points at valid slots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor

from .types import ParsedCaption

# A few irregular verb forms a lemma cannot be recovered from by stripping suffixes.
_IRREGULAR_LEMMAS: dict[str, str] = {
    "is": "be", "are": "be", "was": "be", "were": "be", "am": "be", "been": "be", "being": "be",
    "has": "have", "had": "have", "having": "have",
    "sat": "sit", "stood": "stand", "held": "hold", "wore": "wear", "worn": "wear",
    "ridden": "ride", "rode": "ride", "lay": "lie", "lying": "lie", "ran": "run",
}
_VOWELS = set("aeiou")


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of corner boxes, broadcast over leading dimensions.

    Pairs whose union is empty (two degenerate boxes) get IoU ``0``. For all pairs between two sets
    use ``box_iou(a.unsqueeze(-2), b.unsqueeze(-3))``.

    Shapes:
        a: ``(..., 4)`` ``x1, y1, x2, y2``; b: ``(..., 4)`` broadcastable with ``a``. Output: ``(...)``.
    """
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0).prod(-1)
    union = area_a + area_b - inter
    nonempty = union > 0
    return torch.where(nonempty, inter / torch.where(nonempty, union, torch.ones_like(union)), torch.zeros_like(union))


# ----------------------------------------------------------------------------------------------
# Text side
# ----------------------------------------------------------------------------------------------


def _lemma_candidates(token: str) -> set[str]:
    """Possible lemmas of an inflected token by suffix stripping (``riding`` -> ``ride``, ``rid``)."""
    out = {token}
    if token in _IRREGULAR_LEMMAS:
        out.add(_IRREGULAR_LEMMAS[token])
    for suffix in ("ing", "ed"):
        if token.endswith(suffix) and len(token) > len(suffix) + 1:
            stem = token[: -len(suffix)]
            out.update({stem, stem + "e"})
            if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in _VOWELS:  # sitting -> sit
                out.add(stem[:-1])
            if suffix == "ed" and stem.endswith("i"):  # carried -> carry
                out.add(stem[:-1] + "y")
    if token.endswith("ies") and len(token) > 4:
        out.add(token[:-3] + "y")
    if token.endswith("es") and len(token) > 3:
        out.add(token[:-2])
    if token.endswith("s") and not token.endswith("ss") and len(token) > 2:
        out.add(token[:-1])
    return out


def find_predicate_tokens(
    tokens: Sequence[str],
    predicate: str,
    subject_span: tuple[int, int],
    object_span: tuple[int, int],
) -> list[int]:
    """Token positions of a relation's predicate words in its caption.

    Each word of the predicate lemma (``"next to"`` has two) is matched against the caption tokens
    by exact form or by a suffix-stripped lemma (``riding`` matches ``ride`` and spaCy's ``rid``,
    ``sits`` matches ``sit``, ``is`` matches ``be``). Tokens inside the subject or object span are
    never used. Among several matches the one closest to the gap between the subject and object
    spans is taken (distance 0 inside the gap, ties to the earlier token), and each token is used
    at most once.

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
            if i not in blocked and i not in used and (tok == word or word in _lemma_candidates(tok))
        ]
        if matches:
            used.append(min(matches, key=lambda i: (distance(i), i)))
    return sorted(used)


def collate_text_scene_graphs(
    parsed: Sequence[ParsedCaption],
    *,
    max_objects: int,
    max_relations: int,
    max_predicate_words: int,
    max_tokens: Optional[int] = None,
) -> dict[str, Tensor]:
    """Pad the textual scene graphs of ``M`` captions into index tensors.

    Object ``o`` is represented by the position of its head token, the **last token of its span**
    (the span is the noun-phrase head, usually one token; for a compound head such as
    ``"tennis racket"`` the last token is the head noun). The text encoder's word feature at that
    position becomes the object node.

    A relation's predicate is represented by the positions of its words in the caption, found by
    :func:`find_predicate_tokens`. When none of its words occurs (a parser-normalised predicate such
    as ``"wear"`` for the caption word ``"in"``), the relation is kept with an all-false
    ``rel_pred_mask`` row: this is the **unknown-predicate marker**, and the matcher uses a learned
    unknown-predicate vector for it. Only the first ``P`` predicate words found are kept.

    Args:
        parsed: the parsed captions of the block, in block order.
        max_objects: object slots ``O`` per caption.
        max_relations: relation slots ``T`` per caption.
        max_predicate_words: predicate word slots ``P`` per relation.
        max_tokens: when the text encoder truncates captions to ``L`` tokens, pass ``L``: objects whose
            head lies beyond it are dropped (with their relations) and predicate words beyond it are
            ignored. (default: ``None``, no truncation)

    Returns:
        ``obj_token (M, O)`` long, ``obj_mask (M, O)`` bool, ``rel_subj (M, T)`` / ``rel_obj (M, T)``
        long object slots, ``rel_pred_tokens (M, T, P)`` long, ``rel_pred_mask (M, T, P)`` bool,
        ``rel_mask (M, T)`` bool.

    Raises:
        ValueError: an object span lies outside the caption's tokens, or a relation points at an
            object index the caption does not have.
    """
    m_count, o_max, t_max, p_max = len(parsed), max_objects, max_relations, max_predicate_words
    obj_token = torch.zeros(m_count, o_max, dtype=torch.long)
    obj_mask = torch.zeros(m_count, o_max, dtype=torch.bool)
    rel_subj = torch.zeros(m_count, t_max, dtype=torch.long)
    rel_obj = torch.zeros(m_count, t_max, dtype=torch.long)
    rel_mask = torch.zeros(m_count, t_max, dtype=torch.bool)
    rel_pred_tokens = torch.zeros(m_count, t_max, p_max, dtype=torch.long)
    rel_pred_mask = torch.zeros(m_count, t_max, p_max, dtype=torch.bool)

    for m, caption in enumerate(parsed):
        tokens = caption.dependency.tokens
        objects = caption.scene_graph.objects
        limit = len(tokens) if max_tokens is None else min(len(tokens), max_tokens)
        slot: dict[int, int] = {}
        for k, obj in enumerate(objects):
            start, end = obj.span
            if not 0 <= start < end <= len(tokens):
                raise ValueError(
                    f"caption {m}: object {k} ({obj.name!r}) has span {tuple(obj.span)} outside its "
                    f"{len(tokens)} tokens; re-run the parser with the project tokenisation"
                )
            if len(slot) < o_max and end - 1 < limit:
                slot[k] = len(slot)
                obj_token[m, slot[k]] = end - 1
                obj_mask[m, slot[k]] = True
        t = 0
        for r, (s, predicate, o) in enumerate(caption.scene_graph.relations):
            if not (0 <= s < len(objects) and 0 <= o < len(objects)):
                raise ValueError(
                    f"caption {m}: relation {r} {(s, predicate, o)} points at an object the caption does "
                    f"not have (it has {len(objects)} objects); fix the parsed graph"
                )
            if t >= t_max or s not in slot or o not in slot:
                continue
            rel_subj[m, t], rel_obj[m, t], rel_mask[m, t] = slot[s], slot[o], True
            positions = find_predicate_tokens(tokens[:limit], predicate, objects[s].span, objects[o].span)
            for p, pos in enumerate(positions[:p_max]):
                rel_pred_tokens[m, t, p] = pos
                rel_pred_mask[m, t, p] = True
            t += 1

    return {
        "obj_token": obj_token,
        "obj_mask": obj_mask,
        "rel_subj": rel_subj,
        "rel_obj": rel_obj,
        "rel_pred_tokens": rel_pred_tokens,
        "rel_pred_mask": rel_pred_mask,
        "rel_mask": rel_mask,
    }


# ----------------------------------------------------------------------------------------------
# Visual side
# ----------------------------------------------------------------------------------------------


def _vg_box(obj: Mapping[str, Any]) -> Optional[list[float]]:
    if all(k in obj for k in ("x", "y", "w", "h")):
        x, y, w, h = (float(obj[k]) for k in ("x", "y", "w", "h"))
        return [x, y, x + w, y + h]
    for key in ("box", "bbox"):
        if obj.get(key) is not None:
            return [float(v) for v in obj[key]]
    return None


def _vg_ref(ref: Any) -> Any:
    return ref.get("object_id", ref.get("id")) if isinstance(ref, Mapping) else ref


def _unpack_visual_graph(
    graph: Any, position: int
) -> tuple[Any, list[Optional[int]], list[Optional[list[float]]], list[tuple[int, int, str]]]:
    """``(image id, region index per object, box per object, (subject, object, predicate) triples)``.

    Accepts a VG-style dict or any object with ``boxes``, ``region_index`` and ``relations``.
    """
    if isinstance(graph, Mapping):
        image_id = graph.get("image_id", graph.get("id", position))
        objects = list(graph.get("objects", []))
        ids = [o.get("object_id", o.get("id", k)) for k, o in enumerate(objects)]
        index_of = {oid: k for k, oid in enumerate(ids)}
        regions = [o.get("region_index") for o in objects]
        boxes = [_vg_box(o) for o in objects]
        triples = []
        for r, rel in enumerate(graph.get("relationships", graph.get("relations", []))):
            ends = []
            for role in ("subject", "object"):
                ref = rel[f"{role}_id"] if f"{role}_id" in rel else _vg_ref(rel.get(role))
                if ref not in index_of:
                    raise ValueError(
                        f"image {image_id}: relationship {r} has {role} id {ref!r}, which is not among its "
                        f"{len(objects)} objects; fix the scene graph or drop the relationship"
                    )
                ends.append(index_of[ref])
            predicate = rel.get("predicate", "")
            triples.append((ends[0], ends[1], predicate if isinstance(predicate, str) else str(predicate)))
        return image_id, regions, boxes, triples

    image_id = getattr(graph, "image_id", position)
    raw_boxes = getattr(graph, "boxes", None)
    boxes_t = None if raw_boxes is None else torch.as_tensor(raw_boxes, dtype=torch.float64).reshape(-1, 4)
    labels = getattr(graph, "labels", None)
    raw_regions = getattr(graph, "region_index", None)
    if raw_regions is not None:
        num_objects = len(raw_regions)
    elif boxes_t is not None:
        num_objects = boxes_t.shape[0]
    else:
        num_objects = len(labels) if labels is not None else 0
    regions = [None] * num_objects if raw_regions is None else [
        None if v is None or int(v) < 0 else int(v) for v in raw_regions
    ]
    boxes = [None] * num_objects if boxes_t is None else [b.tolist() for b in boxes_t]
    predicates = getattr(graph, "predicates", None)
    triples = []
    for r, row in enumerate(list(getattr(graph, "relations", None) or [])):
        row = list(row.tolist() if isinstance(row, Tensor) or hasattr(row, "tolist") else row)
        strings = [v for v in row if isinstance(v, str)]
        ends = [int(v) for v in row if not isinstance(v, str)]
        predicate = strings[0] if strings else (str(predicates[r]) if predicates is not None else "")
        for role, idx in zip(("subject", "object"), ends[:2]):
            if not 0 <= idx < num_objects:
                raise ValueError(
                    f"image {image_id}: relation {r} has {role} index {idx}, which is not among its "
                    f"{num_objects} objects; fix the scene graph or drop the relation"
                )
        triples.append((ends[0], ends[1], predicate))
    return image_id, regions, boxes, triples


def collate_visual_scene_graphs(
    graphs: Sequence[Any],
    *,
    num_regions: int,
    max_objects: int,
    max_relations: int,
    region_boxes: Optional[Tensor | Sequence[Any]] = None,
    predicate_vocab: Optional[Mapping[str, int] | Sequence[str]] = None,
) -> dict[str, Tensor]:
    """Pad the visual scene graphs of ``N`` images into index tensors.

    Each object points at the row of the image's region feature array that represents it: its
    ``region_index`` when it has one (SynthScenes ground truth, Neural Motifs on the BUTD regions).
    When an object has no region index, its box is compared with the image's region boxes
    (``region_boxes``, same coordinate frame as the object boxes) and the region with the highest
    IoU is used (ties to the lower index). Relation embeddings are built by the matcher from the
    subject and object region features and their geometry, so predicate labels are optional.

    Args:
        graphs: per image, either a VG-style dict (``image_id``, ``objects`` with ``object_id``,
            optional ``region_index`` and ``x, y, w, h`` or corner ``box``, and ``relationships`` with
            ``subject_id``/``object_id`` (or nested ``subject``/``object`` dicts) and ``predicate``),
            or an object with attributes ``boxes (O, 4)`` corners, ``region_index`` (per object, or
            ``None``) and ``relations`` (rows of subject index, object index and predicate string,
            in either ``(s, o, p)`` or ``(s, p, o)`` order), plus optionally ``image_id``.
        num_regions: region rows ``R`` per image; a region index outside ``[0, R)`` is an error.
        max_objects: object slots ``O`` per image.
        max_relations: relation slots ``T`` per image.
        region_boxes: region corner boxes ``(N, R, 4)`` (tensor or nested lists) in the frame of the
            object boxes (for pixel-corner graphs such as :class:`~kgitm.graphs.scene_graph_json.VisualSceneGraph`,
            the pixel ``{split}_ims_bbx.npy`` rows), needed only when some object lacks a region index
            (``None`` or negative). (default: ``None``)
        predicate_vocab: predicate label vocabulary (``{label: id}`` or a list of labels); when given the
            output has ``rel_label``. (default: ``None``)

    Returns:
        ``obj_region (N, O)`` long, ``obj_mask (N, O)`` bool, ``rel_subj (N, T)`` / ``rel_obj (N, T)``
        long object slots, ``rel_mask (N, T)`` bool, and with a vocabulary ``rel_label (N, T)`` long
        (``-1`` for padding and for predicates outside the vocabulary).

    Raises:
        ValueError: a relation points at a missing object, an object has neither a region index nor
            a box to match (or no ``region_boxes`` were given), or a region index is out of range.
            The message names the image id.
    """
    n_count, o_max, t_max = len(graphs), max_objects, max_relations
    vocab: Optional[Mapping[str, int]] = None
    if predicate_vocab is not None:
        vocab = predicate_vocab if isinstance(predicate_vocab, Mapping) else {
            w: i for i, w in enumerate(predicate_vocab)
        }
    obj_region = torch.zeros(n_count, o_max, dtype=torch.long)
    obj_mask = torch.zeros(n_count, o_max, dtype=torch.bool)
    rel_subj = torch.zeros(n_count, t_max, dtype=torch.long)
    rel_obj = torch.zeros(n_count, t_max, dtype=torch.long)
    rel_mask = torch.zeros(n_count, t_max, dtype=torch.bool)
    rel_label = torch.full((n_count, t_max), -1, dtype=torch.long)

    for n, graph in enumerate(graphs):
        image_id, regions, boxes, triples = _unpack_visual_graph(graph, n)
        kept = min(len(regions), o_max)
        for k in range(kept):
            region = regions[k]
            if region is None:
                if boxes[k] is None or region_boxes is None:
                    raise ValueError(
                        f"image {image_id}: object {k} has no region_index and "
                        + ("no box" if boxes[k] is None else "no region_boxes were given")
                        + " to match it to a region; add region indices or pass region_boxes"
                    )
                cand = torch.as_tensor(region_boxes[n], dtype=torch.float64).reshape(-1, 4)[:num_regions]
                iou = box_iou(torch.tensor(boxes[k], dtype=torch.float64), cand)
                region = int(iou.argmax())
            if not 0 <= region < num_regions:
                raise ValueError(
                    f"image {image_id}: object {k} has region_index {region}, outside [0, {num_regions}); "
                    "the scene graph does not belong to these region features"
                )
            obj_region[n, k] = region
            obj_mask[n, k] = True
        t = 0
        for s, o, predicate in triples:
            if t >= t_max:
                break
            if s >= kept or o >= kept:
                continue
            rel_subj[n, t], rel_obj[n, t], rel_mask[n, t] = s, o, True
            if vocab is not None:
                rel_label[n, t] = vocab.get(predicate, -1)
            t += 1

    out = {"obj_region": obj_region, "obj_mask": obj_mask, "rel_subj": rel_subj, "rel_obj": rel_obj,
           "rel_mask": rel_mask}
    if vocab is not None:
        out["rel_label"] = rel_label
    return out
