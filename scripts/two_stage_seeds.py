"""Summarise `scripts/bench_two_stage.py` over seeds: per shortlist ``k``, mean ± sd [95% interval].

Each input JSON is one seed's two-stage benchmark (same coarse and expensive methods, each seed its own
data, coarse and expensive runs). Per ``k`` the table gives the reduction in matcher evaluations (mean
over seeds), the two-stage RSUM and RSUM minus that seed's exhaustive RSUM, each as mean ± sample sd
[95% Student-t interval of the mean] (:func:`kgitm.cli.grid.t_interval`, the grid tables' statistic), and
the coarse model's and the exhaustive matcher's own RSUM for reference. Files written with
``--coarse-weight`` (an ensemble on the shortlist) also get RSUM minus that seed's ensemble on every
pair, the fair baseline of such rows.

The goal (at least ``--min-reduction`` fewer matcher evaluations, RSUM no more than ``--tolerance``
below exhaustive; a shortlist may also raise RSUM) is judged two ways: ``every seed`` asks it of each
seed's own difference, ``interval`` asks the *lower* end of the 95% interval of the mean difference to
stay above ``-tolerance``, a demanding test with 3 seeds (the interval is 2.5 sd wide either side).

Example::

    python scripts/two_stage_seeds.py docs/results/two_stage_vse_infty_gsmn_sparse_warmup1_synthscenes_seed{0,1,2}.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from kgitm.cli.grid import t_interval
from kgitm.core.io import atomic_write_json


def load(paths: list[Path]) -> list[dict]:
    runs = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"{path}: not a readable bench_two_stage JSON ({err}); pass the files bench_two_stage.py wrote")
        if "two_stage" not in data or "expensive" not in data or "coarse" not in data:
            raise SystemExit(f"{path}: no 'two_stage', 'coarse' or 'expensive' key; pass the files bench_two_stage.py wrote")
        runs.append(data)
    ks = [sorted(row["k"] for row in run["two_stage"]) for run in runs]
    if any(k != ks[0] for k in ks):
        raise SystemExit(f"the files have different shortlist sizes ({ks}); run every seed with the same --ks")
    return runs


def summarise(runs: list[dict], tolerance: float = 1.0, min_reduction: float = 10.0) -> dict:
    """Per-k statistics over the seeds (one JSON each)."""
    exhaustive = np.array([run["expensive"]["results"]["rsum"] for run in runs])
    coarse = np.array([run["coarse"]["results"]["rsum"] for run in runs])
    weights = {run.get("coarse_weight", 0.0) for run in runs}
    if len(weights) > 1:
        raise SystemExit(f"the files were run with different --coarse-weight values ({sorted(weights)}); summarise each weight apart")
    ensemble = np.array([run["ensemble"]["results"]["rsum"] for run in runs]) if runs[0].get("ensemble") else None
    rows = []
    for k in sorted(row["k"] for row in runs[0]["two_stage"]):
        per_seed = [next(row for row in run["two_stage"] if row["k"] == k) for run in runs]
        rsum = np.array([row["rsum"] for row in per_seed])
        diff = rsum - exhaustive
        reduction = float(np.mean([row["reduction"] for row in per_seed]))
        d_mean, d_sd, d_lo, d_hi = t_interval(diff)
        rows.append({
            "k": k,
            "reduction": reduction,
            "rsum": t_interval(rsum),
            "rsum_diff": (d_mean, d_sd, d_lo, d_hi),
            "rsum_diff_per_seed": diff.tolist(),
            **({"rsum_diff_ensemble": t_interval(rsum - ensemble)} if ensemble is not None else {}),
            "goal_met_every_seed": bool(reduction >= min_reduction and diff.min() >= -tolerance),
            "goal_met_interval": bool(reduction >= min_reduction and d_lo >= -tolerance),
        })
    return {"seeds": len(runs), "exhaustive": t_interval(exhaustive), "coarse": t_interval(coarse), "rows": rows,
            "coarse_weight": weights.pop(), "ensemble": None if ensemble is None else t_interval(ensemble),
            "tolerance": tolerance, "min_reduction": min_reduction}


def _fmt(stat: tuple[float, float, float, float], sign: bool = False) -> str:
    mean, sd, lo, hi = stat
    s = "+" if sign else ""
    return f"{mean:{s}.1f} ± {sd:.1f} [{lo:{s}.1f}, {hi:{s}.1f}]"


def markdown(summary: dict) -> str:
    mixed = summary["ensemble"] is not None
    lines = [f"coarse alone: {_fmt(summary['coarse'])}; exhaustive: {_fmt(summary['exhaustive'])} ({summary['seeds']} seeds)"
             + (f"; ensemble on every pair (coarse weight {summary['coarse_weight']:g}): {_fmt(summary['ensemble'])}" if mixed else ""),
             "",
             "| shortlist `k` | fewer than exhaustive | RSUM | RSUM - exhaustive | per seed | goal: every seed | goal: interval |"
             + (" RSUM - ensemble |" if mixed else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if mixed else "")]
    for row in summary["rows"]:
        per_seed = ", ".join(f"{d:+.1f}" for d in row["rsum_diff_per_seed"])
        every, interval = ("met" if row[key] else "not met" for key in ("goal_met_every_seed", "goal_met_interval"))
        lines.append(f"| {row['k']} | {row['reduction']:.1f}x | {_fmt(row['rsum'])} | {_fmt(row['rsum_diff'], sign=True)} "
                     f"| {per_seed} | {every} | {interval} |" + (f" {_fmt(row['rsum_diff_ensemble'], sign=True)} |" if mixed else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="bench_two_stage.py JSON files, one per seed")
    parser.add_argument("--tolerance", type=float, default=1.0, help="RSUM points below exhaustive allowed (default 1)")
    parser.add_argument("--min-reduction", type=float, default=10.0, help="fewer matcher evaluations required (default 10x)")
    parser.add_argument("--output", type=Path, help="also write the summary as JSON")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give at least two seeds' files (an interval needs two values)")
    summary = summarise(load(args.runs), args.tolerance, args.min_reduction)
    print(markdown(summary))
    if args.output:
        atomic_write_json(args.output, {**summary, "inputs": [str(p) for p in args.runs]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
