"""Probe: how much does exchanging subject and object change a split's visual scene graphs?

The matcher grid tests SGM's checkpoints with every visual relation's subject and object exchanged
(``--data.scene_graph_flip true``, docs/benchmarks.md). On the oracle graphs the flip takes relation swap
from 92 to 11; on the simulated generator's graphs it changes nothing. SGM's visual relation node is an
MLP of the subject's and object's region features and their box geometry (the configs set no
predicate-label embedding), so a flipped edge ``(o, s)`` is the same node as an unflipped ``(o, s)``: when
a graph holds both directions of a pair, the flip leaves its set of relation nodes as it was.

This script measures that on the graphs SGM reads (each file read as the preprocessing reads it: the
``visual_top_k`` best-scored relations of a prediction file, every relation of the oracle file), per
source:

- ``edges``: relations kept per image (mean);
- ``reverse_kept``: percent of kept relations ``(s, o)`` whose reverse pair ``(o, s)`` is kept too
  (any predicate);
- ``unchanged_images``: percent of images whose set of ordered pairs the flip leaves unchanged;
- for the relation-swap pair of each image (``diagnostics/{split}_relation_swap.jsonl``; its objects
  located through the oracle's region indices): percent of images whose graph holds that pair in the
  true direction (``swap_pair_forward``), reversed (``swap_pair_reverse``), and both (``swap_pair_both``).

Example::

    python scripts/probe_flip_overlap.py data/synthscenes_seed0 --split test --output flip_overlap.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kgitm.core.io import atomic_write_json  # noqa: E402
from kgitm.data.synthscenes.ontology import PREDICATES  # noqa: E402
from kgitm.graphs.preprocess import DEFAULT_VISUAL_TOP_K  # noqa: E402
from kgitm.graphs.scene_graph_json import VisualSceneGraph, read_motifs_predictions, read_vg_scene_graphs  # noqa: E402

PRESETS = ("predcls", "sgcls", "sgdet")


def swap_region_pairs(oracle: list[VisualSceneGraph], swap_file: Path) -> dict[int, tuple[int, int]]:
    """Image -> (subject region, object region) of its relation-swap pair: the first non-symmetric
    oracle relation, as :func:`kgitm.data.synthscenes.diagnostics._relation_swap` picks it."""
    symmetric = {p.name for p in PREDICATES if p.symmetric}
    out = {}
    for line in swap_file.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        g = oracle[int(rec["image"])]
        rel = next(((s, p, o) for s, p, o in g.relations if p not in symmetric), None)
        if rel is None or g.region_index is None:
            continue
        s, p, o = rel
        names = [g.labels[s], p, g.labels[o]]
        if names != list(rec["triple"]):
            raise SystemExit(f"probe_flip_overlap: {swap_file}: image {rec['image']}: triple {rec['triple']} is not the "
                             f"oracle's first non-symmetric relation {names}; regenerate the data set")
        out[int(rec["image"])] = (g.region_index[s], g.region_index[o])
    return out


def region_pairs(g: VisualSceneGraph) -> set[tuple[int, int]]:
    """The graph's ordered pairs of regions (objects without a region index keep their object index)."""
    ri = g.region_index or list(range(len(g.labels)))
    return {(ri[s], ri[o]) for s, _, o in g.relations}


def overlap(graphs: list[VisualSceneGraph], swap_pairs: dict[int, tuple[int, int]]) -> dict[str, float]:
    edges, reverse, unchanged, fwd, rev, both = [], [], [], [], [], []
    for i, g in enumerate(graphs):
        pairs = region_pairs(g)
        edges.append(len(pairs))
        reverse.extend((o, s) in pairs for s, o in pairs)
        unchanged.append(pairs == {(o, s) for s, o in pairs})
        if i in swap_pairs:
            s, o = swap_pairs[i]
            fwd.append((s, o) in pairs)
            rev.append((o, s) in pairs)
            both.append((s, o) in pairs and (o, s) in pairs)
    pct = lambda v: float(100 * np.mean(v)) if v else float("nan")  # noqa: E731
    return {
        "images": len(graphs),
        "edges": float(np.mean(edges)),
        "reverse_kept": pct(reverse),
        "unchanged_images": pct(unchanged),
        "swap_pairs": len(fwd),
        "swap_pair_forward": pct(fwd),
        "swap_pair_reverse": pct(rev),
        "swap_pair_both": pct(both),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="a SynthScenes folder (kgitm synthscenes --out ROOT)")
    ap.add_argument("--split", default="test", choices=("dev", "test"), help="split (default test)")
    ap.add_argument("--top-k", type=int, default=DEFAULT_VISUAL_TOP_K,
                    help=f"relations kept per predicted graph, as preprocessing keeps them (default {DEFAULT_VISUAL_TOP_K})")
    ap.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = ap.parse_args(argv)

    oracle_file = args.root / f"{args.split}_scene_graphs.json"
    swap_file = args.root / "diagnostics" / f"{args.split}_relation_swap.jsonl"
    for f in (oracle_file, swap_file):
        if not f.is_file():
            print(f"probe_flip_overlap: {f}: missing; generate the data set with `kgitm synthscenes --out {args.root}`",
                  file=sys.stderr)
            return 2
    oracle = read_vg_scene_graphs(oracle_file)
    swap_pairs = swap_region_pairs(oracle, swap_file)
    rows = {"oracle": overlap(oracle, swap_pairs)}
    for preset in PRESETS:
        path = args.root / f"{args.split}_scene_graphs_{preset}.json"
        if path.is_file():
            rows[preset] = overlap(read_motifs_predictions(path, top_k=args.top_k), swap_pairs)
    cols = ("edges", "reverse_kept", "unchanged_images", "swap_pair_forward", "swap_pair_reverse", "swap_pair_both")
    print(f"{'source':8s} " + " ".join(f"{c:>17s}" for c in cols))
    for name, r in rows.items():
        print(f"{name:8s} " + " ".join(f"{r[c]:17.1f}" for c in cols))
    if args.output:
        atomic_write_json(args.output, {"root": str(args.root), "split": args.split, "top_k": args.top_k, "sources": rows})
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
