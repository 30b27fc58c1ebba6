"""Validation curves of several runs in one picture: a metric of each validation (``val/rsum`` by default)
against the optimiser step, read from each run's Lightning CSV log (``RUN/logs/metrics.csv``).

For comparing training budgets (how far a run still climbs, where another levels off), which a table of
final figures hides. Each run's best validation is marked; ``--hline`` draws a reference value.

    python scripts/plot_val_curves.py --run "CORA=runs/grid/x/cora/seed0" --run "VSE-infinity=runs/grid/x/vse/seed0" \
        --title "dev RSUM, seed 0" --output docs/images/dev_curves.png

Writes the PNG atomically and prints each run's best value and its step.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from kgitm.viz.report import training_curves


def _labelled(spec: str) -> tuple[str, Path]:
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"--run {spec!r}: expected LABEL=RUN_FOLDER (e.g. CORA=runs/grid/x/cora/seed0)")
    return label, Path(path)


def val_curve(run: Path, metric: str) -> list[tuple[float, float]]:
    """``[(step, value), ...]`` of ``metric`` in ``run/logs/metrics.csv``, in step order.

    Raises:
        SystemExit: the log is missing or has no value of ``metric`` (names the file and the fix).
    """
    log = run / "logs" / "metrics.csv"
    if not log.is_file():
        raise SystemExit(f"{log}: no CSV log; give a run folder trained with kgitm fit (its logs/metrics.csv)")
    points = sorted(training_curves(log).get(metric, []))
    if not points:
        raise SystemExit(f"{log}: no {metric} logged; name a logged column with --metric (e.g. val/rsum)")
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=_labelled, action="append", required=True, metavar="LABEL=RUN",
                        help="a label and a run folder (repeat for several runs)")
    parser.add_argument("--metric", default="val/rsum", help="the logged column to plot (default val/rsum)")
    parser.add_argument("--hline", type=float, action="append", default=[], metavar="VALUE",
                        help="a horizontal reference line (repeatable)")
    parser.add_argument("--title", default="", help="the picture's title")
    parser.add_argument("--output", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, run in args.run:
        points = val_curve(run, args.metric)
        steps, values = zip(*points)
        line, = ax.plot(steps, values, marker=".", label=label)
        best = max(range(len(values)), key=values.__getitem__)
        ax.plot([steps[best]], [values[best]], marker="o", markersize=8, fillstyle="none", color=line.get_color())
        print(f"{label}: best {args.metric} {values[best]:.1f} at step {steps[best]:.0f} ({len(values)} validations; last {values[-1]:.1f})")
    for value in args.hline:
        ax.axhline(value, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(args.metric)
    if args.title:
        ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.output.parent, suffix=".png.tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    plt.close(fig)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
