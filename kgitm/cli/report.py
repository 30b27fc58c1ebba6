"""``kgitm report``: a self-contained HTML page of one run, or of several side by side.

    kgitm report RUN [--out RUN/report_test.html]
    kgitm report RUN1 RUN2 ... --out page.html

The page (:mod:`kgitm.viz.report`) holds the metrics of every protocol, R@K curves, rank histograms,
training curves, sampled queries with their top-5 and the diagnostic failures with their pictures; its
images are embedded (base64), it loads nothing from the network.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kgitm report", description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="run folders (runs/<experiment>/seed<seed>)")
    p.add_argument("--out", type=Path, help="the HTML file (default RUN/report_<split>.html for one run; required for several)")
    p.add_argument("--split", default="test", help="the evaluated split (default test)")
    p.add_argument("--queries", type=int, default=8, help="sampled queries per direction (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query sample (default 0)")
    p.add_argument("--failures-per-group", type=int, default=2, help="failures listed per predicate / attribute pair (default 2)")
    p.add_argument("--failure-pictures", type=int, default=12,
                   help="failures explained with pictures (true and swapped caption), per run, one per predicate / attribute "
                        "pair before a second in any (default 12; -1: no failures section, and no model loaded when the run "
                        "has its similarity matrix)")
    p.add_argument("--image-dir", type=Path, help="image files for the pictures (see kgitm explain)")
    p.add_argument("--data-root", help="the data folder, if it moved since training (data.root)")
    p.add_argument("--graph-store", help="the graph stores, if they moved since training (data.graph_store)")
    p.add_argument("--title", help="the page title")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if len(args.runs) > 1 and args.out is None:
        print("kgitm report: error: several runs make one comparison page: give --out page.html", file=sys.stderr)
        return 2
    from kgitm.core.io import DataFormatError, atomic_write_text
    from kgitm.models.run import RunFolderError
    from kgitm.viz.report import render_html, run_report

    start = time.perf_counter()
    reports = []
    for run in args.runs:
        if not run.is_dir():
            print(f"kgitm report: error: {run}: no such run folder", file=sys.stderr)
            return 2
        try:
            reports.append(run_report(
                run, split=args.split, queries=args.queries, seed=args.seed, failures_per_group=args.failures_per_group,
                failure_pictures=args.failure_pictures, image_dir=args.image_dir, data_root=args.data_root,
                graph_store=args.graph_store,
            ))
        except (RunFolderError, DataFormatError, ValueError) as err:
            print(f"kgitm report: error: {run}: {err}", file=sys.stderr)
            return 2
    out = args.out or args.runs[0] / f"report_{args.split}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render_html(reports, args.title))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return 0
