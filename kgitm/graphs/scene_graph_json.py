"""Readers of visual scene graphs: Visual-Genome-style JSON and Neural-Motifs-style predictions.

SGM (Wang et al., WACV 2020, "Cross-modal Scene Graph Matching for Relationship-aware Image-Text
Retrieval") matches textual scene graphs against visual scene graphs predicted by Neural Motifs
(Zellers et al., CVPR 2018) on the detected regions. Both readers return :class:`VisualSceneGraph`,
one per image, in file order.

**Visual-Genome-style JSON** (:func:`read_vg_scene_graphs`): a list of images (or ``{"images": [...]}``)::

    {"image_id": 1,                       # or "id"
     "objects": [{"object_id": 10,        # or "id"; unique within the image
                  "names": ["man"],       # or "name": "man"; the first name is the label
                  "attributes": ["tall"], # optional
                  "x": 5, "y": 8, "w": 40, "h": 90,   # pixel box (x, y = top-left)
                  "region_index": 3}],    # optional: the BUTD region this object is
     "attributes": [{"object_id": 10, "attributes": ["young"]}],   # optional, merged into objects
     "relationships": [{"subject_id": 10, "object_id": 11, "predicate": "riding"}]}

Relationships may also give ``"subject": {"object_id": ...}`` / ``"object": {"object_id": ...}`` as
in VG's ``relationships.json``. Boxes are converted to pixel corners ``x1, y1, x2, y2``.

**Neural-Motifs-style predictions** (:func:`read_motifs_predictions`): users convert the Motifs
outputs (``pred_boxes``, ``pred_classes``, ``pred_rel_inds``, ``rel_scores``) to JSON in several ways,
so the reader accepts these keys per image (first key found wins):

=================  =====================================================================
field              accepted keys
=================  =====================================================================
image id           ``image_id``, ``img_id``, ``id``; or the key of a ``{image_id: entry}`` dict
boxes ``(O, 4)``   ``boxes``, ``pred_boxes``, ``bboxes`` (pixel ``x1, y1, x2, y2``; optional)
object labels      ``box_labels``, ``labels``, ``pred_labels``, ``pred_classes``, ``obj_labels``
                   (names, or integer class ids mapped through ``label_names``)
object attributes  ``attributes`` (optional, one list of strings per object)
region index       ``region_index`` (optional, one int per object; -1 for none)
relation pairs     ``rel_pairs``, ``pred_rel_inds``, ``rel_inds`` (``(T, 2)`` subject, object index)
predicates         ``rel_labels``, ``predicates``, ``pred_rel_labels``, ``rel_classes`` (names or ids
                   mapped through ``predicate_names``); if absent, a ``(T, P)`` ``rel_scores``
                   matrix gives the argmax over columns ``1..P-1`` (column 0 = background)
relation scores    ``rel_scores``, ``pred_rel_scores``, ``scores`` (``(T,)``; optional)
=================  =====================================================================

The file is a list of entries, a ``{image_id: entry}`` dict, or a dict with ``"predictions"`` (list or
dict) plus optional class tables ``"ind_to_classes"``/``"label_names"`` and
``"ind_to_predicates"``/``"predicate_names"``. ``top_k`` keeps the ``k`` best-scored relations (the first
``k`` when there are no scores; Motifs sorts by score) after dropping those below ``score_threshold``.

Errors name the file and the image: a relation pointing at a missing object, duplicate object
ids, unknown label ids. Images with no objects or no relations are fine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import networkx as nx
import torch
from torch import Tensor

if TYPE_CHECKING:  # PyG takes seconds to import; only to_pyg needs it
    from torch_geometric.data import Data


class SceneGraphFormatError(ValueError):
    """A scene-graph file does not have the expected content (message names file and image)."""


@dataclass
class VisualSceneGraph:
    """The scene graph of one image.

    Attributes:
        image_id: the image's id (as a string).
        labels: object class names.
        attributes: attribute names per object.
        boxes: pixel corner boxes ``x1, y1, x2, y2``.
        region_index: for each object the BUTD region it is (-1 when unknown), or ``None`` when the
            source gives no region indices.
        relations: ``(subject index, predicate, object index)`` triples over the objects.
        object_ids: the source's object ids (VG ``object_id``; Motifs: the object's position).
        relation_scores: one score per relation, or ``None``.

    Shapes:
        boxes: ``(O, 4)`` float32.
    """

    image_id: str
    labels: list[str] = field(default_factory=list)
    attributes: list[list[str]] = field(default_factory=list)
    boxes: Tensor = field(default_factory=lambda: torch.zeros(0, 4))
    region_index: list[int] | None = None
    relations: list[tuple[int, str, int]] = field(default_factory=list)
    object_ids: list[int] = field(default_factory=list)
    relation_scores: list[float] | None = None

    @property
    def num_objects(self) -> int:
        return len(self.labels)

    def to_pyg(
        self,
        *,
        label_vocab: Mapping[str, int] | None = None,
        predicate_vocab: Mapping[str, int] | None = None,
    ) -> "Data":
        """Objects as labelled nodes, relations as typed directed edges (subject -> object).

        Args:
            label_vocab: maps labels to ids; when given, ``y`` holds the node label ids.
            predicate_vocab: maps predicates to ids; when given, ``edge_type`` holds them.

        Returns:
            ``Data(edge_index, box, node_label, edge_label, num_nodes=O)`` (+ ``y``, ``edge_type``,
            ``region_index``, ``edge_score`` when available). Unknown vocabulary words raise KeyError.

        Shapes:
            edge_index: ``(2, T)``; box: ``(O, 4)``; y: ``(O,)``; edge_type: ``(T,)``.
        """
        from torch_geometric.data import Data

        edge_index = torch.tensor([[s for s, _, _ in self.relations], [o for _, _, o in self.relations]], dtype=torch.long)
        data = Data(
            edge_index=edge_index.view(2, -1),
            box=self.boxes.float(),
            node_label=list(self.labels),
            edge_label=[p for _, p, _ in self.relations],
            num_nodes=self.num_objects,
        )
        if label_vocab is not None:
            data.y = torch.tensor([label_vocab[x] for x in self.labels], dtype=torch.long)
        if predicate_vocab is not None:
            data.edge_type = torch.tensor([predicate_vocab[p] for _, p, _ in self.relations], dtype=torch.long)
        if self.region_index is not None:
            data.region_index = torch.tensor(self.region_index, dtype=torch.long)
        if self.relation_scores is not None:
            data.edge_score = torch.tensor(self.relation_scores, dtype=torch.float)
        return data

    def to_networkx(self) -> nx.MultiDiGraph:
        """Nodes ``0..O-1`` with ``label``, ``attributes``, ``box``, ``object_id``, ``region_index``;
        one edge per relation with ``predicate`` (and ``score``)."""
        g = nx.MultiDiGraph(image_id=self.image_id)
        for i, label in enumerate(self.labels):
            g.add_node(
                i,
                label=label,
                attributes=list(self.attributes[i]),
                box=[float(v) for v in self.boxes[i].tolist()],
                object_id=self.object_ids[i] if self.object_ids else i,
                region_index=None if self.region_index is None else self.region_index[i],
            )
        for t, (s, p, o) in enumerate(self.relations):
            attrs: dict[str, Any] = {"predicate": p}
            if self.relation_scores is not None:
                attrs["score"] = self.relation_scores[t]
            g.add_edge(s, o, **attrs)
        return g


def _load_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise SceneGraphFormatError(f"{path}: not valid JSON ({e})") from None


def _first(d: Mapping, keys: Sequence[str], default: Any = None) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    return default


# ----------------------------------------------------------------------------------- Visual Genome


def _vg_object_id(ref: Any) -> Any:
    return ref.get("object_id", ref.get("id")) if isinstance(ref, Mapping) else ref


def parse_vg_image(entry: Mapping, *, source: str = "<memory>", index: int = 0) -> VisualSceneGraph:
    """One VG-style image entry -> :class:`VisualSceneGraph` (see the module docstring)."""
    if not isinstance(entry, Mapping):
        raise SceneGraphFormatError(f"{source}: entry {index} is not a JSON object")
    image_id = _first(entry, ("image_id", "id"))
    if image_id is None:
        raise SceneGraphFormatError(f"{source}: entry {index} has no image_id")
    image_id = str(image_id)
    where = f"{source}: image {image_id}"
    objects = entry.get("objects") or []
    id_to_idx: dict[Any, int] = {}
    labels: list[str] = []
    attributes: list[list[str]] = []
    boxes: list[list[float]] = []
    regions: list[int] = []
    any_region = False
    object_ids: list[int] = []
    for j, obj in enumerate(objects):
        oid = _vg_object_id(obj)
        if oid is None:
            raise SceneGraphFormatError(f"{where}: object {j} has no object_id")
        if oid in id_to_idx:
            raise SceneGraphFormatError(f"{where}: duplicate object_id {oid}")
        names = obj.get("names")
        name = names[0] if names else obj.get("name")
        if not name:
            raise SceneGraphFormatError(f"{where}: object {oid} has no name")
        try:
            x, y, w, h = (float(obj.get(k, 0.0)) for k in ("x", "y", "w", "h"))
        except (TypeError, ValueError):
            raise SceneGraphFormatError(f"{where}: object {oid} has a non-numeric box") from None
        id_to_idx[oid] = len(labels)
        labels.append(str(name).strip())
        attributes.append([str(a).strip() for a in obj.get("attributes") or []])
        boxes.append([x, y, x + w, y + h])
        ri = obj.get("region_index")
        any_region |= ri is not None
        regions.append(-1 if ri is None else int(ri))
        object_ids.append(int(oid) if isinstance(oid, int) or str(oid).lstrip("-").isdigit() else j)
    for a in entry.get("attributes") or []:
        ref = a.get("attribute", a) if isinstance(a, Mapping) else None
        oid = _vg_object_id(ref) if ref is not None else None
        if oid not in id_to_idx:
            raise SceneGraphFormatError(f"{where}: attribute entry points at missing object_id {oid}")
        values = ref.get("attributes", ref.get("attribute", []))
        values = [values] if isinstance(values, str) else values
        attributes[id_to_idx[oid]].extend(str(v).strip() for v in values)
    relations: list[tuple[int, str, int]] = []
    for r in entry.get("relationships") or []:
        s_id = r.get("subject_id", _vg_object_id(r.get("subject")))
        o_id = r.get("object_id") if "object_id" in r else _vg_object_id(r.get("object"))
        for which, oid in (("subject", s_id), ("object", o_id)):
            if oid not in id_to_idx:
                raise SceneGraphFormatError(f"{where}: relationship {which} points at missing object_id {oid}")
        pred = r.get("predicate")
        if pred is None:
            raise SceneGraphFormatError(f"{where}: relationship {s_id}->{o_id} has no predicate")
        relations.append((id_to_idx[s_id], str(pred).strip().lower(), id_to_idx[o_id]))
    return VisualSceneGraph(
        image_id=image_id,
        labels=labels,
        attributes=attributes,
        boxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
        region_index=regions if any_region else None,
        relations=relations,
        object_ids=object_ids,
    )


def read_vg_scene_graphs(path: str | os.PathLike) -> list[VisualSceneGraph]:
    """Read a Visual-Genome-style scene-graph JSON file (list of images, in order)."""
    data = _load_json(path)
    if isinstance(data, Mapping) and "images" in data:
        data = data["images"]
    if not isinstance(data, list):
        raise SceneGraphFormatError(f"{path}: expected a JSON list of images (or {{'images': [...]}})")
    return [parse_vg_image(e, source=str(path), index=i) for i, e in enumerate(data)]


# ----------------------------------------------------------------------------------- Neural Motifs

_ID_KEYS = ("image_id", "img_id", "id")
_BOX_KEYS = ("boxes", "pred_boxes", "bboxes")
_LABEL_KEYS = ("box_labels", "labels", "pred_labels", "pred_classes", "obj_labels")
_PAIR_KEYS = ("rel_pairs", "pred_rel_inds", "rel_inds")
_PRED_KEYS = ("rel_labels", "predicates", "pred_rel_labels", "rel_classes")
_SCORE_KEYS = ("rel_scores", "pred_rel_scores", "scores")


def _names(values: Sequence, table: Sequence[str] | None, *, what: str, where: str) -> list[str]:
    out = []
    known = None if table is None else set(map(str, table))
    for v in values:
        if isinstance(v, str):
            if known is not None and v.strip() not in known:
                raise SceneGraphFormatError(
                    f"{where}: {what[:-1]} {v.strip()!r} is not in the file's name table "
                    f"({len(known)} names); fix the label or add it to the table"
                )
            out.append(v.strip())
        elif isinstance(v, (int, float)) and float(v).is_integer():
            if table is None:
                raise SceneGraphFormatError(
                    f"{where}: {what} are integer ids but no name table was given "
                    f"(pass {what[:-1]}_names or put it in the file)"
                )
            i = int(v)
            if not 0 <= i < len(table):
                raise SceneGraphFormatError(f"{where}: {what[:-1]} id {i} is outside the name table (size {len(table)})")
            out.append(str(table[i]))
        else:
            raise SceneGraphFormatError(f"{where}: bad {what[:-1]} {v!r}")
    return out


def parse_motifs_image(
    entry: Mapping,
    *,
    image_id: Any = None,
    label_names: Sequence[str] | None = None,
    predicate_names: Sequence[str] | None = None,
    top_k: int | None = None,
    score_threshold: float | None = None,
    source: str = "<memory>",
    index: int = 0,
) -> VisualSceneGraph:
    """One Motifs-style entry -> :class:`VisualSceneGraph` (accepted keys: module docstring)."""
    if not isinstance(entry, Mapping):
        raise SceneGraphFormatError(f"{source}: entry {index} is not a JSON object")
    image_id = _first(entry, _ID_KEYS, image_id)
    if image_id is None:
        raise SceneGraphFormatError(f"{source}: entry {index} has no image id (keys {', '.join(_ID_KEYS)})")
    where = f"{source}: image {image_id}"
    raw_labels = _first(entry, _LABEL_KEYS)
    if raw_labels is None:
        raise SceneGraphFormatError(f"{where}: no object labels (keys {', '.join(_LABEL_KEYS)})")
    labels = _names(raw_labels, label_names, what="labels", where=where)
    n_obj = len(labels)
    raw_boxes = _first(entry, _BOX_KEYS)
    if raw_boxes is None:
        boxes = torch.zeros(n_obj, 4)
    else:
        boxes = torch.tensor(raw_boxes, dtype=torch.float32).view(-1, 4)
        if boxes.size(0) != n_obj:
            raise SceneGraphFormatError(f"{where}: {boxes.size(0)} boxes but {n_obj} object labels")
    attributes = [[str(a) for a in attrs] for attrs in entry.get("attributes", [[]] * n_obj)]
    if len(attributes) != n_obj:
        raise SceneGraphFormatError(f"{where}: {len(attributes)} attribute lists but {n_obj} objects")
    region_index = entry.get("region_index")
    if region_index is not None:
        region_index = [int(r) for r in region_index]
        if len(region_index) != n_obj:
            raise SceneGraphFormatError(f"{where}: {len(region_index)} region indices but {n_obj} objects")

    pairs = _first(entry, _PAIR_KEYS, [])
    pairs = [tuple(int(v) for v in p) for p in pairs]
    if any(len(p) != 2 for p in pairs):
        raise SceneGraphFormatError(f"{where}: relation pairs must be (subject_idx, object_idx)")
    raw_scores = _first(entry, _SCORE_KEYS)
    raw_preds = _first(entry, _PRED_KEYS)
    scores: list[float] | None = None
    if raw_preds is None:
        if pairs and not (raw_scores and isinstance(raw_scores[0], Sequence)):
            raise SceneGraphFormatError(
                f"{where}: relations have no predicates (keys {', '.join(_PRED_KEYS)}, or a (T, P) rel_scores matrix)"
            )
        rows = raw_scores or []
        raw_preds, scores = [], []
        for row in rows:  # column 0 is Motifs' background class
            best = max(range(1, len(row)), key=lambda c: row[c])
            raw_preds.append(best)
            scores.append(float(row[best]))
    elif raw_scores is not None:
        scores = [float(s) for s in raw_scores]
    preds = _names(raw_preds, predicate_names, what="predicates", where=where)
    if len(preds) != len(pairs) or (scores is not None and len(scores) != len(pairs)):
        raise SceneGraphFormatError(
            f"{where}: {len(pairs)} relation pairs, {len(preds)} predicates"
            + ("" if scores is None else f", {len(scores)} scores")
        )
    for s, o in pairs:
        for idx in (s, o):
            if not 0 <= idx < n_obj:
                raise SceneGraphFormatError(f"{where}: relation points at missing object index {idx} (image has {n_obj} objects)")

    keep = list(range(len(pairs)))
    if score_threshold is not None:
        if scores is None:
            raise SceneGraphFormatError(f"{where}: score_threshold given but the relations have no scores")
        keep = [t for t in keep if scores[t] >= score_threshold]
    if scores is not None:
        keep = sorted(keep, key=lambda t: -scores[t])  # stable: ties keep file order
    if top_k is not None:
        keep = keep[:top_k]
    return VisualSceneGraph(
        image_id=str(image_id),
        labels=labels,
        attributes=attributes,
        boxes=boxes,
        region_index=region_index,
        relations=[(pairs[t][0], preds[t].lower(), pairs[t][1]) for t in keep],
        object_ids=list(range(n_obj)),
        relation_scores=None if scores is None else [scores[t] for t in keep],
    )


def read_motifs_predictions(
    path: str | os.PathLike,
    *,
    label_names: Sequence[str] | None = None,
    predicate_names: Sequence[str] | None = None,
    top_k: int | None = None,
    score_threshold: float | None = None,
) -> list[VisualSceneGraph]:
    """Read a Neural-Motifs-style predictions JSON file (formats: module docstring).

    Args:
        path: the JSON file.
        label_names: class-id -> name table for integer labels (overrides the file's).
        predicate_names: predicate-id -> name table for integer predicates (overrides the file's).
        top_k: keep at most this many relations per image, best scores first (default: all;
            SGM used 25).
        score_threshold: drop relations scored below this (default: none).
    """
    data = _load_json(path)
    if isinstance(data, Mapping) and "predictions" in data:
        label_names = label_names or _first(data, ("ind_to_classes", "label_names"))
        predicate_names = predicate_names or _first(data, ("ind_to_predicates", "predicate_names"))
        data = data["predictions"]
    if isinstance(data, Mapping):
        items = [(k, v) for k, v in data.items()]
    elif isinstance(data, list):
        items = [(None, v) for v in data]
    else:
        raise SceneGraphFormatError(f"{path}: expected a list of predictions or an {{image_id: prediction}} object")
    return [
        parse_motifs_image(
            v,
            image_id=k,
            label_names=label_names,
            predicate_names=predicate_names,
            top_k=top_k,
            score_threshold=score_threshold,
            source=str(path),
            index=i,
        )
        for i, (k, v) in enumerate(items)
    ]
