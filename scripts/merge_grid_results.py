"""Merge the rows of a partial grid run into a grid's recorded results and rebuild its summaries.

``kgitm grid ... --only AXIS=VALUE --seeds ...`` reruns or adds some cells of a grid; its output folder then
holds only those runs. This script takes every row of the partial run's ``results_{split}.csv`` (or only the
cells named with ``--cells``), replaces the rows of the recorded results that have the same cell and seed,
appends the others, and rewrites ``results_{split}.csv``, ``summary_{split}.md`` and ``summary_{split}.png``
of the recorded folder with the grid's own summary code (:func:`kgitm.cli.grid.summarize`), so the numbers
are those ``kgitm grid`` would print for the whole grid. Rows are kept in the grid's run order (seeds, then
the grid file's cells).

    python scripts/merge_grid_results.py configs/grid/matchers_synthscenes.yaml \\
        docs/results/matchers_synthscenes runs/grid/matchers_synthscenes --cells gsmn_sparse_warmup1
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kgitm.cli.grid import cells, load_grid, summarize  # noqa: E402


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def merge(recorded: list[dict], new: list[dict], axes: list[str]) -> list[dict]:
    """``recorded`` with each row of ``new`` in place of the row of the same cell and seed (appended when
    there is none)."""
    key = lambda r: (*(r[a] for a in axes), str(r["seed"]))  # noqa: E731
    out = {key(r): r for r in recorded}
    for r in new:
        out[key(r)] = r
    return list(out.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grid", type=Path, help="the grid file (its axes, metrics and name)")
    ap.add_argument("recorded", type=Path, help="folder of the recorded results (e.g. docs/results/NAME)")
    ap.add_argument("partial", type=Path, help="output folder of the partial grid run (runs/grid/NAME or its --out)")
    ap.add_argument("--cells", nargs="+", default=None, help="take only these axis values from the partial run (default: all its rows)")
    ap.add_argument("--splits", nargs="+", default=None, help="splits (default: the grid's)")
    args = ap.parse_args(argv)
    spec = load_grid(args.grid)
    axes = list(spec["axes"])
    order = {tuple(labels[a] for a in axes): n for n, (labels, _) in enumerate(cells(spec))}
    for split in args.splits or spec["splits"]:
        rec_file, new_file = args.recorded / f"results_{split}.csv", args.partial / f"results_{split}.csv"
        for f in (rec_file, new_file):
            if not f.is_file():
                print(f"merge_grid_results: {f}: missing (run the grid first)", file=sys.stderr)
                return 2
        new = [r for r in read_rows(new_file) if args.cells is None or set(r[a] for a in axes) & set(args.cells)]
        if not new:
            print(f"merge_grid_results: {new_file}: no row of cells {args.cells}", file=sys.stderr)
            return 2
        unknown = [r for r in new if tuple(r[a] for a in axes) not in order]
        if unknown:
            print(f"merge_grid_results: {new_file}: cell {[unknown[0][a] for a in axes]} is not in {args.grid}", file=sys.stderr)
            return 2
        rows = merge(read_rows(rec_file), new, axes)
        rows.sort(key=lambda r: (int(r["seed"]), order.get(tuple(r[a] for a in axes), len(order))))
        summarize(spec, rows, args.recorded, split)
        print(f"{split}: {len(new)} rows merged into {rec_file} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
