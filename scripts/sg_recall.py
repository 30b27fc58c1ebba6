"""Triplet Recall@K of predicted scene graphs against the ground truth (Scene-Graph-Benchmark's SGRecall).

Computed as ``maskrcnn_benchmark/data/datasets/evaluation/vg/sgg_eval.py`` of Scene-Graph-Benchmark
(Tang et al., CVPR 2020; Neural Motifs' evaluation, graph constraint):

- per image, the predicted triplets in score order (the reader sorts by ``rel_scores``), the first
  ``K`` of them;
- a ground-truth triplet is recalled when one of them has its subject label, predicate and object
  label and both boxes at IoU >= 0.5 with the ground-truth boxes (IoU in the +1 pixel convention of
  ``boxlist_iou``; with true boxes, as in predcls/sgcls, the IoU test always passes);
- recall of an image = recalled / ground-truth triplets, averaged over the images with at least one
  ground-truth triplet (images without any are skipped), times 100.

The ground truth is the oracle ``{split}_scene_graphs.json`` mapped into the predictions' vocabulary
with the tables in ``meta.json["predicted_scene_graphs"]`` (``label_map``, ``predicate_map``); a
relation with an object that has no class there is dropped, as VG150 drops objects outside its
classes.

Usage::

    python scripts/sg_recall.py DATA_DIR [DATA_DIR ...] --split dev test --presets predcls sgcls sgdet \\
        --k 20 50 100 --output recall.json

Prints one row per data folder, split and preset (and the mean over the folders when there are
several); ``--output`` writes the same numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from kgitm.core.geometry import box_iou
from kgitm.data.synthscenes.predicted import ORACLE_FILE, PREDICTED_FILE, SGG_PRESETS
from kgitm.graphs.scene_graph_json import VisualSceneGraph, read_motifs_predictions, read_vg_scene_graphs

IOU_THRESHOLD = 0.5  # TEST.RELATION.IOU_THRESHOLD of Scene-Graph-Benchmark
PIXEL_INCLUSIVE = 1.0  # boxlist_iou's TO_REMOVE: a box spans x2 - x1 + 1 pixels
DEFAULT_K = (20, 50, 100)


def map_ground_truth(graph: VisualSceneGraph, label_map: Mapping[str, str | None],
                     predicate_map: Mapping[str, str]) -> VisualSceneGraph:
    """``graph`` in the predictions' vocabulary; relations touching an unmapped object are dropped.

    Args:
        graph: a ground-truth scene graph (SynthScenes names).
        label_map: SynthScenes category -> predicted class name (``None``: no class).
        predicate_map: SynthScenes predicate -> predicted predicate name.
    """
    labels = [label_map[x] for x in graph.labels]
    relations = [(s, predicate_map[p], o) for s, p, o in graph.relations
                 if labels[s] is not None and labels[o] is not None]
    return VisualSceneGraph(image_id=graph.image_id, labels=[x or "" for x in labels], boxes=graph.boxes,
                            relations=relations, object_ids=graph.object_ids,
                            attributes=[[] for _ in labels], region_index=graph.region_index)


def image_recall(gt: VisualSceneGraph, pred: VisualSceneGraph, ks: Sequence[int], *,
                 iou_threshold: float = IOU_THRESHOLD) -> dict[int, float] | None:
    """Recall@K (fractions) of one image, or ``None`` when it has no ground-truth triplet.

    ``pred.relations`` must be in score order (as :func:`read_motifs_predictions` returns them).
    """
    if not gt.relations:
        return None
    inclusive = torch.tensor([0.0, 0.0, PIXEL_INCLUSIVE, PIXEL_INCLUSIVE])
    gt_boxes, pred_boxes = gt.boxes.double() + inclusive, pred.boxes.double() + inclusive
    iou = box_iou(gt_boxes[:, None], pred_boxes[None, :])  # (gt objects, predicted objects)
    first_hit = [None] * len(gt.relations)  # rank of the first predicted triplet matching each GT triplet
    for g, (gs, gp, go) in enumerate(gt.relations):
        for rank, (ps, pp, po) in enumerate(pred.relations):
            if (pp == gp and pred.labels[ps] == gt.labels[gs] and pred.labels[po] == gt.labels[go]
                    and iou[gs, ps] >= iou_threshold and iou[go, po] >= iou_threshold):
                first_hit[g] = rank
                break
    return {k: sum(r is not None and r < k for r in first_hit) / len(gt.relations) for k in ks}


def triplet_recall(gt: Sequence[VisualSceneGraph], pred: Sequence[VisualSceneGraph], ks: Sequence[int] = DEFAULT_K,
                   *, iou_threshold: float = IOU_THRESHOLD) -> dict:
    """Mean triplet Recall@K (in %) over the images with at least one ground-truth triplet.

    Args:
        gt: ground-truth graphs, already in the predictions' vocabulary (:func:`map_ground_truth`).
        pred: predicted graphs, same images in the same order, relations in score order.
        ks: the cut-offs ``K``.
        iou_threshold: box IoU a predicted subject and object need with the ground truth's.

    Returns:
        ``{"R@K": recall, ..., "images": images counted, "gt_triplets": their triplets}``.

    Raises:
        ValueError: the two lists differ in length or in an image id (names the first one).
    """
    if len(gt) != len(pred):
        raise ValueError(f"{len(gt)} ground-truth images but {len(pred)} predicted ones")
    sums = {k: 0.0 for k in ks}
    images = triplets = 0
    for g, p in zip(gt, pred):
        if g.image_id != p.image_id:
            raise ValueError(f"image {g.image_id} of the ground truth is {p.image_id} in the predictions; "
                             "both files must list the same images in the same order")
        r = image_recall(g, p, ks, iou_threshold=iou_threshold)
        if r is None:
            continue
        images += 1
        triplets += len(g.relations)
        for k in ks:
            sums[k] += r[k]
    return {**{f"R@{k}": 100.0 * sums[k] / max(images, 1) for k in ks}, "images": images, "gt_triplets": triplets}


def evaluate_folder(root: Path, split: str, presets: Sequence[str], ks: Sequence[int]) -> list[dict]:
    """Recall rows of every preset of one SynthScenes folder and split."""
    meta_path = root / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: no meta.json; generate the data set first (kgitm synthscenes --out {root})")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    vocab = meta.get("predicted_scene_graphs")
    if vocab is None:
        raise ValueError(f"{meta_path}: no predicted_scene_graphs record; regenerate with predicted_graphs=True "
                         "(kgitm synthscenes --overwrite)")
    gt = [map_ground_truth(g, vocab["label_map"], vocab["predicate_map"])
          for g in read_vg_scene_graphs(root / ORACLE_FILE.format(split=split))]
    rows = []
    for preset in presets:
        path = root / PREDICTED_FILE.format(split=split, preset=preset)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no {preset} predictions for split {split}")
        rows.append({"data": root.name, "seed": meta["seed"], "split": split, "preset": preset,
                     **triplet_recall(gt, read_motifs_predictions(path), ks)})
    return rows


def mean_rows(rows: Sequence[dict], ks: Sequence[int]) -> list[dict]:
    """The mean over data folders of the rows with the same split and preset."""
    out = []
    for key in dict.fromkeys((r["split"], r["preset"]) for r in rows):
        group = [r for r in rows if (r["split"], r["preset"]) == key]
        out.append({"data": "mean", "seed": [r["seed"] for r in group], "split": key[0], "preset": key[1],
                    **{f"R@{k}": sum(r[f"R@{k}"] for r in group) / len(group) for k in ks},
                    "images": sum(r["images"] for r in group), "gt_triplets": sum(r["gt_triplets"] for r in group)})
    return out


def _table(rows: Sequence[dict], ks: Sequence[int]) -> str:
    head = ["data", "seed", "split", "preset", *(f"R@{k}" for k in ks), "images", "gt_triplets"]
    body = [[str(r["data"]), ",".join(map(str, r["seed"])) if isinstance(r["seed"], list) else str(r["seed"]),
             r["split"], r["preset"], *(f"{r[f'R@{k}']:.1f}" for k in ks), str(r["images"]), str(r["gt_triplets"])]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *body])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dirs", nargs="+", type=Path, help="SynthScenes folders (several: one row each, and the mean)")
    p.add_argument("--split", nargs="+", default=["dev"], help="splits (default: dev)")
    p.add_argument("--presets", nargs="+", default=list(SGG_PRESETS), help="protocols (default: %(default)s)")
    p.add_argument("--k", nargs="+", type=int, default=list(DEFAULT_K), help="cut-offs K (default: %(default)s)")
    p.add_argument("--output", type=Path, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    try:
        rows = [r for root in args.data_dirs for split in args.split
                for r in evaluate_folder(root, split, args.presets, args.k)]
    except (FileNotFoundError, ValueError) as e:
        print(f"sg_recall: {e}", file=sys.stderr)
        return 2
    means = mean_rows(rows, args.k) if len(args.data_dirs) > 1 else []
    print(_table(rows + means, args.k))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"k": args.k, "rows": rows, "mean": means}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
