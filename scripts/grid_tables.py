"""Markdown tables for docs/benchmarks.md from finished grids: dev and test side by side, every row naming
its visual-graph source, and each cell compared with a baseline row by its 95% interval.

Reads ``results_{split}.csv`` that ``kgitm grid`` writes (one row per run) and prints, per cell, the
mean ± sample sd [95% Student-t interval of the mean] over seeds (:func:`kgitm.cli.grid.t_interval`, the
same numbers as the grid's ``summary_{split}.md``). The verdict column compares a cell with the baseline
cell on one metric of the test split: ``above`` / ``below`` when the two intervals do not overlap, and
``not separated`` otherwise (the benchmark rule: a difference is called only when the intervals say so).

    python scripts/grid_tables.py runs/grid/matchers_synthscenes --baseline vsepp \\
        --metrics rsum relation_swap_acc attribute_swap_acc --verdict relation_swap_acc
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

from kgitm.cli.grid import t_interval

#: visual-graph source of a cell, from the words in its name (the grid files name them so)
SOURCES = ("oracle", "predcls", "sgcls", "sgdet")

LABELS = {
    "rsum": "RSUM",
    "i2t_r1": "i2t R@1",
    "t2i_r1": "t2i R@1",
    "relation_swap_acc": "relation swap",
    "attribute_swap_acc": "attribute swap",
    "paraphrase_other_t2i_r1": "paraphrase (not linked) t2i R@1",
    "paraphrase_other_rsum": "paraphrase (not linked) RSUM",
    "paraphrase_wordnet_t2i_r1": "paraphrase (WordNet-linked) t2i R@1",
    "paraphrase_wordnet_rsum": "paraphrase (WordNet-linked) RSUM",
    "synonym_shift_t2i_r1": "legacy synonym shift t2i R@1 (circular for WordNet)",
}


def read(grid: Path, split: str) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    """Cells in file order and their per-seed values of every metric."""
    path = grid / f"results_{split}.csv"
    if not path.exists():
        raise SystemExit(f"{path}: not found; run `kgitm grid ... --summarize-only` first")
    cells: dict[str, dict[str, list[float]]] = {}
    with path.open() as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        axis_keys = fields[: fields.index("seed")]  # the grid writes its axes, then seed, then metrics
        for row in reader:
            name = "__".join(row[k] for k in axis_keys)
            per = cells.setdefault(name, {})
            for k, v in row.items():
                if k in axis_keys or k == "seed" or v in ("", None):
                    continue
                per.setdefault(k, []).append(float(v))
    return list(cells), cells


def source(cell: str) -> str:
    for s in SOURCES:
        if s in cell.split("_") or f"_{s}" in cell or cell.startswith(s):
            return s
    return "none (regions and boxes only)"


def fmt(values: list[float] | None) -> str:
    if not values:
        return "-"
    mean, sd, lo, hi = t_interval(np.asarray(values))
    sd = 0.0 if math.isnan(sd) else sd
    return f"{mean:.1f} ± {sd:.1f} [{lo:.1f}, {hi:.1f}]"


def verdict(a: list[float] | None, b: list[float] | None) -> str:
    if not a or not b:
        return "-"
    if len(a) < 2 or len(b) < 2:
        return "one seed: not called"
    _, _, alo, ahi = t_interval(np.asarray(a))
    _, _, blo, bhi = t_interval(np.asarray(b))
    if alo > bhi:
        return "above"
    if ahi < blo:
        return "below"
    return "not separated"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", type=Path, help="a grid's output folder (runs/grid/NAME)")
    p.add_argument("--metrics", nargs="+", default=["rsum", "relation_swap_acc", "attribute_swap_acc"])
    p.add_argument("--dev-metrics", nargs="+", default=["rsum"], help="metrics shown for dev too")
    p.add_argument("--baseline", help="cell the verdict compares with")
    p.add_argument("--verdict", default="rsum", help="test metric of the verdict")
    p.add_argument("--prefix", default="", help="read the metrics of a test variant (e.g. flipped/)")
    args = p.parse_args(argv)

    order, test = read(args.grid, "test")
    _, dev = read(args.grid, "dev") if (args.grid / "results_dev.csv").exists() else ([], {})
    head = ["cell", "visual graphs", "seeds"]
    head += [f"dev {LABELS.get(m, m)}" for m in args.dev_metrics]
    head += [f"test {LABELS.get(args.prefix + m, args.prefix + m)}" for m in args.metrics]
    if args.baseline:
        head.append(f"test {LABELS.get(args.verdict, args.verdict)} vs {args.baseline}")
    if args.prefix:
        head.append(f"test {LABELS.get(args.verdict, args.verdict)} vs the same checkpoints without {args.prefix.rstrip('/')}")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for cell in order:
        t, d = test[cell], dev.get(cell, {})
        if args.prefix and not any(k.startswith(args.prefix) for k in t):
            continue
        seeds = len(t.get(args.prefix + args.metrics[0], []))
        row = [cell, source(cell), str(seeds)]
        row += [fmt(d.get(args.prefix + m)) for m in args.dev_metrics]
        row += [fmt(t.get(args.prefix + m)) for m in args.metrics]
        if args.baseline:
            row.append("(baseline)" if cell == args.baseline else verdict(t.get(args.prefix + args.verdict), test.get(args.baseline, {}).get(args.verdict)))
        if args.prefix:
            row.append(verdict(t.get(args.prefix + args.verdict), t.get(args.verdict)))
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
