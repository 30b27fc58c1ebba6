"""Benchmark: `kgitm fit` (first 20 steps), `test` and `predict` on a COCO-shaped data set, wall time and
peak resident memory of each command, for this version of the code or another one.

The data set has COCO's shapes: train 113,287 images x 36 x 2048 float32 (33.4 GB) with 566,435
captions, `testall` 5,000 images with 25,000 captions, a small `dev`. The feature files are sparse
(written with ``np.lib.format.open_memmap``, no blocks allocated), so scanning them reads zeros at page
cache speed; a real disk adds its read time to the first scan. Each command runs in a fresh process
(VSE++, 1024-d: the data path dominates, not the model) and its peak RSS is the child's ``ru_maxrss``,
which counts file pages mapped into the process.

    python scripts/bench_coco_commands.py --label after --output docs/results/coco_commands_after.json
    git worktree add /tmp/kgitm-before c241e29   # kgitm 0.1
    python scripts/bench_coco_commands.py --code-root /tmp/kgitm-before --label before \\
        --output docs/results/coco_commands_before.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_data_path import COCO_TRAIN_IMAGES, make_split  # noqa: E402 - scripts/bench_data_path.py

REPO = Path(__file__).resolve().parents[1]


def measured(cmd: list[str], env: dict[str, str], cwd: Path) -> dict:
    """Run ``cmd`` in a wrapper process that reports its child's wall time and peak RSS."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter(); rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=open('stderr.log', 'a'))\n"
        "print(json.dumps({'rc': rc, 'seconds': round(time.perf_counter() - t, 1), "
        "'peak_rss_gb': round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, cwd=cwd, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/bench_coco"), help="data and runs (the data is kept for reruns)")
    p.add_argument("--code-root", type=Path, default=REPO, help="the kgitm checkout whose code runs (default: this one)")
    p.add_argument("--label", default="after")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--output", type=Path, default=None)
    a = p.parse_args()
    work = a.work.resolve()
    data = work / "coco_shaped"
    t0 = time.perf_counter()
    make_split(data, "train", COCO_TRAIN_IMAGES, sparse=True)
    make_split(data, "testall", 5000, sparse=True, seed=1)
    make_split(data, "dev", 100, sparse=True, seed=2)
    code = a.code_root.resolve()
    run = work / f"run_{a.label}"
    env = {**os.environ, "PYTHONPATH": str(code), "KGITM_CACHE_DIR": str(work / f"cache_{a.label}_{time.time_ns()}"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    config = str(code / "configs/experiment/vsepp_synthscenes.yaml")
    common = ["--config", config, "--data.root", str(data), "--data.val_split", "dev", "--data.test_split", "testall",
              "--data.diagnostics", "false", "--trainer.default_root_dir", str(run), "--seed_everything", "0"]
    exe = [sys.executable, "-m", "kgitm"]
    result: dict = {"label": a.label, "code": str(code), "data_prepared_s": round(time.perf_counter() - t0, 1), "steps": a.steps}
    ckpt = run / "checkpoints"  # a run folder: evaluation finds RUN/vocab.txt (the new code) and need not open train
    fit = [*exe, "fit", *common, "--trainer.max_steps", str(a.steps), "--trainer.limit_val_batches", "0",
           "--trainer.logger", "false", "--trainer.callbacks", "lightning.pytorch.callbacks.ModelCheckpoint",
           "--trainer.callbacks.dirpath", str(ckpt), "--trainer.callbacks.filename", "final", "--trainer.enable_progress_bar", "false"]
    result["fit"] = measured(fit, env, work)
    print(f"[{a.label}] fit, first {a.steps} steps: {result['fit']}", flush=True)
    final = next(ckpt.glob("*.ckpt"), None)
    if final is None:
        raise SystemExit(f"no checkpoint written by fit; see {work / 'stderr.log'}")
    evaluate = ["--trainer.logger", "false", "--trainer.callbacks", "null", "--trainer.enable_progress_bar", "false", "--ckpt_path", str(final)]
    result["test"] = measured([*exe, "test", *common, *evaluate], env, work)
    print(f"[{a.label}] test (5,000 x 25,000): {result['test']}", flush=True)
    result["predict"] = measured([*exe, "predict", *common, *evaluate, "--sims_out", str(run / "sims.npy")], env, work)
    print(f"[{a.label}] predict: {result['predict']}", flush=True)
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
