#!/usr/bin/env python
"""Wall time of ``kgitm explain`` (one pair) and ``kgitm report`` (one run) on a SynthScenes run whose
test split has ``--images`` images x 5 captions (1,000 x 5,000 is Flickr30K's test split).

    python scripts/bench_report.py                      # Flickr30K-sized: 1000 images, 5000 captions
    python scripts/bench_report.py --images 100         # a quick check
    python scripts/bench_report.py --experiment gsmn_sparse_synthscenes.yaml --graphs

It generates the data set (small preset sizes, the test split resized), trains the experiment for a few
steps, runs ``kgitm test`` and ``kgitm predict`` (results and the ``sims_test.npy`` matrix the report
reads), then times each command as a user runs it (a fresh process: imports and model loading
included) and, in one process, the work itself (explain: the pair, its ranks and the picture; report:
everything but the imports). Targets: explain under 5 s, the report under 2 minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sh(args: list[str], *, cwd: Path, quiet: bool = True) -> float:
    """Run ``python -m kgitm ARGS`` in ``cwd``; its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "kgitm", *args], cwd=cwd, env=env, capture_output=quiet, text=True)
    if out.returncode:
        sys.stderr.write((out.stdout or "") + (out.stderr or ""))
        raise SystemExit(f"bench_report: kgitm {' '.join(args[:2])} failed ({out.returncode})")
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000, help="test images (x5 captions); default 1000 (Flickr30K's test split)")
    p.add_argument("--experiment", default="vsepp_synthscenes.yaml", help="configs/experiment/ file (default %(default)s)")
    p.add_argument("--graphs", action="store_true", help="build the graph stores first (GSMN sparse, SGM)")
    p.add_argument("--work", type=Path, default=Path("/tmp/kgitm-bench-report"), help="scratch folder (default %(default)s)")
    p.add_argument("--failure-pictures", type=int, default=12, help="passed to kgitm report (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="fresh explain processes timed; the median is judged (default %(default)s)")
    p.add_argument("--output", type=Path, default=None, help="write the figures as JSON")
    a = p.parse_args()
    if a.output:
        a.output = a.output.resolve()  # the timing below runs in the work folder
    work = a.work / f"{Path(a.experiment).stem}_{a.images}"
    data, graphs, run = work / "data", work / "graphs", work / "run"
    work.mkdir(parents=True, exist_ok=True)
    common = ["--config", str(REPO / "configs/experiment" / a.experiment), "--config", str(REPO / "configs/size/cpu_small.yaml"),
              "--data.root", str(data), *(["--data.graph_store", str(graphs)] if a.graphs else []), "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "5", "--trainer.enable_progress_bar", "false"]
    if not (run / "sims_test.npy").is_file():
        sh(["synthscenes", "--out", str(data), "--images-train", "400", "--images-dev", "50", "--images-test", str(a.images),
            "--overwrite"], cwd=work)
        if a.graphs:
            sh(["preprocess", "--config", str(REPO / "configs/preprocess/synthscenes.yaml"), "--data-root", str(data),
                "--out", str(graphs), "--progress", "false"], cwd=work)
        sh(["fit", *common, "--run_dir", str(run)], cwd=work)
        ckpt = str(run / "checkpoints" / "best.ckpt")
        sh(["test", *common, "--ckpt_path", ckpt], cwd=work)
        sh(["predict", *common, "--ckpt_path", ckpt], cwd=work)
    import numpy as np

    shape = np.load(run / "sims_test.npy", mmap_mode="r").shape
    print(f"run {run}: {a.experiment}, test similarity matrix {shape[0]} images x {shape[1]} captions")

    explain_runs = sorted(sh(["explain", str(run), "--image", "1", "--caption", "7", "--out", str(work / "explain.png")], cwd=work)
                          for _ in range(a.repeats))
    explain_cli = statistics.median(explain_runs)
    report_cli = sh(["report", str(run), "--out", str(work / "report.html"), "--failure-pictures", str(a.failure_pictures)], cwd=work)

    # the same work in this process, imports done: where the time goes
    os.chdir(work)
    sys.path.insert(0, str(REPO))
    t0 = time.perf_counter()
    from kgitm.cli.explain import saved_sims
    from kgitm.models.explain import explain_pair
    from kgitm.models.run import load_run_model
    from kgitm.viz.explain import draw_explanation

    t1 = time.perf_counter()
    model, data = load_run_model(run)
    t2 = time.perf_counter()
    expl = explain_pair(model, data, split="test", image=1, caption=7, sims=saved_sims(run, "test"))
    t3 = time.perf_counter()
    draw_explanation(expl, work / "explain_inprocess.png")
    t4 = time.perf_counter()
    from kgitm.viz.report import render_html, run_report

    rep = run_report(run, failure_pictures=a.failure_pictures)
    page = render_html([rep])
    t5 = time.perf_counter()
    print(f"kgitm explain (fresh process): {explain_cli:6.1f} s   target < 5 s  (median of {a.repeats}: "
          f"{explain_runs[0]:.1f} to {explain_runs[-1]:.1f} s)")
    print(f"  imports {t1 - t0:.1f} s, loading the run {t2 - t1:.1f} s, the pair and its ranks {t3 - t2:.2f} s, "
          f"the picture {t4 - t3:.2f} s: explain itself {t4 - t2:.2f} s")
    print(f"kgitm report (fresh process):  {report_cli:6.1f} s   target < 120 s  ({len(page) / 1e6:.1f} MB page, "
          f"{a.failure_pictures} failures explained)")
    print(f"  in process, imports done: {t5 - t4:.1f} s")
    if a.output:
        import json
        import platform

        from kgitm.core.io import atomic_write_text

        atomic_write_text(a.output, json.dumps({
            "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "load_after": os.getloadavg()[0],
            "experiment": a.experiment, "images": shape[0], "captions": shape[1],
            "explain_fresh_s": explain_runs, "explain_fresh_median_s": explain_cli,
            "explain_in_process": {"imports_s": t1 - t0, "load_run_s": t2 - t1, "pair_and_ranks_s": t3 - t2, "picture_s": t4 - t3},
            "report_fresh_s": report_cli, "report_in_process_s": t5 - t4, "report_bytes": len(page),
            "failure_pictures": a.failure_pictures}, indent=1) + "\n")
        print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
