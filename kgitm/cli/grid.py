"""The grid job: matchers x knowledge sources x seeds through the Lightning CLI, one command.

``kgitm grid configs/grid/knowledge_ablation.yaml`` runs every cell of the grid as its own
``kgitm fit`` + ``kgitm test`` (separate processes, so one failing run does not stop the others),
skips runs whose ``test_results.json`` already exists, and writes ``results.csv`` (one row per run),
``summary.md`` (mean and standard deviation over seeds per cell) and ``summary.png`` (bar chart with
error bars) into the grid's output folder. Each run keeps its resolved config (``config.yaml``, saved
by LightningCLI) next to its checkpoints and logs.

Grid file::

    name: knowledge_ablation
    out: runs/grid/knowledge_ablation
    base: configs/experiment/vsepp_synthscenes.yaml   # data + model + trainer to start from
    trainer: configs/trainer/cpu.yaml                 # rewritten per run (logs and checkpoints in the run folder)
    seeds: [0, 1, 2]
    args: [--trainer.max_epochs, "10"]                # applied to every run
    axes:                                             # one value per axis makes a cell
      matcher:
        vsepp: [--model, configs/model/vsepp.yaml]
        gsmn_sparse: [--model, configs/model/gsmn_sparse.yaml]
      knowledge:
        none: []
        wordnet: [--model.knowledge, configs/knowledge/wordnet.yaml]
    metrics: [rsum, relation_swap_acc, attribute_swap_acc, synonym_shift_t2i_r1]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kgitm.core.io import atomic_open, atomic_write_text, savefig_atomic

DEFAULT_METRICS = ["rsum", "i2t_r1", "t2i_r1", "relation_swap_acc", "attribute_swap_acc", "synonym_shift_t2i_r1"]


def load_grid(path: Path) -> dict[str, Any]:
    """Read and check a grid file; errors name the file and the missing or malformed key."""
    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"kgitm grid: {path}: file not found") from None
    except yaml.YAMLError as e:
        raise SystemExit(f"kgitm grid: {path}: not valid YAML ({e})") from None
    if not isinstance(spec, dict):
        raise SystemExit(f"kgitm grid: {path}: expected a mapping with name/base/axes/seeds")
    for key in ("name", "base", "axes"):
        if key not in spec:
            raise SystemExit(f"kgitm grid: {path}: missing key {key!r} (see `kgitm grid --help`)")
    axes = spec["axes"]
    if not isinstance(axes, dict) or not axes or not all(isinstance(v, dict) and v for v in axes.values()):
        raise SystemExit(f"kgitm grid: {path}: 'axes' must map each axis name to a non-empty mapping value -> CLI args")
    for axis, values in axes.items():
        for v in values:
            if not isinstance(v, str):
                raise SystemExit(
                    f"kgitm grid: {path}: axis {axis!r} has a value named {v!r} ({type(v).__name__}); "
                    'quote it in the YAML (e.g. "off": [])'
                )
    spec.setdefault("seeds", [0])
    spec.setdefault("args", [])
    spec.setdefault("metrics", DEFAULT_METRICS)
    spec.setdefault("out", f"runs/grid/{spec['name']}")
    return spec


def check_grid(path: Path) -> dict[str, Any]:
    """Load a grid file and check that every config file it names exists (relative to the repository)."""
    path = Path(path)
    spec = load_grid(path)
    root = path.resolve().parents[2] if path.resolve().parent.parent.name == "configs" else Path.cwd()
    names = [spec["base"], spec.get("trainer", "configs/trainer/cpu.yaml")]
    def files(args: list[str]) -> list[str]:  # values, and --key=value / --key+=value forms
        return [a.split("=", 1)[-1] for a in args if a.endswith((".yaml", ".yml"))]

    for _, args in cells(spec):
        names += files(args)
    names += files(list(map(str, spec["args"])))
    for n in names:
        if not (root / n).exists():
            raise SystemExit(f"kgitm grid: {path}: names {n}, which does not exist under {root}")
    return spec


def cells(spec: dict[str, Any]) -> list[tuple[dict[str, str], list[str]]]:
    """Every combination of axis values: ``({axis: value}, extra CLI args)``."""
    names = list(spec["axes"])
    out = []
    for combo in itertools.product(*(spec["axes"][a].items() for a in names)):
        labels = {a: v for a, (v, _) in zip(names, combo)}
        args = [str(x) for _, extra in combo for x in (extra or [])]
        out.append((labels, args))
    return out


def _run_trainer_config(base_trainer: Path, run_dir: Path) -> Path:
    """The trainer config with logs and checkpoints redirected into ``run_dir``."""
    cfg = yaml.safe_load(base_trainer.read_text()) or {}
    cfg["default_root_dir"] = str(run_dir)
    cfg["logger"] = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run_dir), "name": "logs", "version": ""}},
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": str(run_dir), "name": "logs", "version": ""}},
    ]
    cfg["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(run_dir / "checkpoints"), "filename": "best", "monitor": "val/rsum", "mode": "max", "save_last": True},
        }
    ]
    cfg["enable_progress_bar"] = False
    path = run_dir / "trainer.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_one(spec: dict[str, Any], labels: dict[str, str], args: list[str], seed: int, out: Path, *, dry_run: bool = False) -> dict | None:
    """Train and test one cell/seed unless its results exist; returns the results or None on failure."""
    cell = "__".join(labels[a] for a in spec["axes"])
    run_dir = out / cell / f"seed{seed}"
    result_file = run_dir / "test_results.json"
    if result_file.exists():
        return json.loads(result_file.read_text())["results"]
    if dry_run:
        print(f"[dry run] {cell} seed {seed}: kgitm fit --config {spec['base']} {' '.join(args)} {' '.join(map(str, spec['args']))}")
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = _run_trainer_config(Path(spec.get("trainer", "configs/trainer/cpu.yaml")), run_dir)
    # order matters: base, the cell's configs, the run's trainer file (logs and checkpoints in the run
    # folder), the cell's own --trainer.* overrides again (the trainer file would reset them), then the
    # grid-wide overrides
    trainer_overrides = [x for i in range(len(args) - 1) if args[i].startswith("--trainer.") for x in args[i : i + 2]]
    cmd_base = [
        "--config", str(spec["base"]),
        *args,
        "--trainer", str(trainer),
        *trainer_overrides,
        *[str(a) for a in spec["args"]],
        "--seed_everything", str(seed),
    ]
    log = open(run_dir / "run.log", "a")
    exe = [sys.executable, "-m", "kgitm"]
    t0 = time.time()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    fit = exe + ["fit", *cmd_base] + (["--ckpt_path", str(ckpt)] if ckpt.exists() else [])
    # the test step logs nothing (its logger would overwrite the training metrics.csv) and writes
    # test_results.json into the run folder
    test = exe + ["test", *cmd_base, "--ckpt_path", str(run_dir / "checkpoints" / "best.ckpt"), "--trainer.logger", "false"]
    for step in (fit, test):
        rc = subprocess.call(step, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            print(f"  {cell} seed {seed}: FAILED (exit {rc}); see {run_dir / 'run.log'}", flush=True)
            return None
    print(f"  {cell} seed {seed}: done in {time.time() - t0:.0f}s", flush=True)
    return json.loads(result_file.read_text())["results"]


def summarize(spec: dict[str, Any], rows: list[dict], out: Path) -> str:
    """Write results.csv, summary.md and summary.png; return the Markdown table."""
    metrics = list(spec["metrics"])
    axes = list(spec["axes"])
    with atomic_open(out / "results.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=[*axes, "seed", *metrics])
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in [*axes, "seed", *metrics]})

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[a] for a in axes), []).append(r)
    lines = [
        f"| {' | '.join(axes)} | seeds | " + " | ".join(metrics) + " |",
        "|" + "---|" * (len(axes) + 1 + len(metrics)),
    ]
    stats: dict[tuple, dict[str, tuple[float, float]]] = {}
    for key, rs in groups.items():
        stats[key] = {}
        cells_txt = []
        for m in metrics:
            vals = np.array([r[m] for r in rs if m in r and r[m] != ""], dtype=float)
            if len(vals) == 0:
                cells_txt.append("-")
                continue
            mean, sd = float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            stats[key][m] = (mean, sd)
            cells_txt.append(f"{mean:.1f} ± {sd:.1f}")
        lines.append(f"| {' | '.join(key)} | {len(rs)} | " + " | ".join(cells_txt) + " |")
    table = "\n".join(lines) + "\n"
    note = f"\nMean ± sample standard deviation over seeds; grid `{spec['name']}`.\n"
    atomic_write_text(out / "summary.md", table + note)
    _plot(stats, metrics, axes, out / "summary.png")
    return table


def _plot(stats: dict, metrics: list[str], axes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(stats)
    fig, subplots = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(subplots[0], metrics):
        means = [stats[k].get(m, (np.nan, 0))[0] for k in keys]
        sds = [stats[k].get(m, (np.nan, 0))[1] for k in keys]
        ax.bar(range(len(keys)), means, yerr=sds, capsize=3, color=[f"C{i % 10}" for i in range(len(keys))])
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(["\n".join(k) for k in keys], fontsize=7, rotation=0)
        ax.set_title(m, fontsize=9)
    fig.suptitle(" x ".join(axes) + " (mean ± sd over seeds)", fontsize=9)
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="kgitm grid",
        description="Run a grid of matchers x knowledge sources x seeds (each cell: kgitm fit + kgitm test), "
        "skipping finished runs, then write results.csv, summary.md (mean ± sd) and summary.png.",
        epilog="The grid file format is documented in kgitm/lit/grid.py and configs/grid/*.yaml.",
    )
    p.add_argument("grid", type=Path, help="grid YAML file (e.g. configs/grid/knowledge_ablation.yaml)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the grid's 'out')")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the grid's seeds")
    p.add_argument("--only", nargs="+", default=None, metavar="AXIS=VALUE", help="run only cells matching all of these")
    p.add_argument("--dry-run", action="store_true", help="list the runs without starting them")
    p.add_argument("--summarize-only", action="store_true", help="only rebuild the summary from finished runs")
    a = p.parse_args(argv)
    spec = load_grid(a.grid)
    out = Path(a.out or spec["out"])
    seeds = a.seeds or spec["seeds"]
    only = dict(x.split("=", 1) for x in (a.only or []))
    todo = [(lab, args) for lab, args in cells(spec) if all(lab.get(k) == v for k, v in only.items())]
    if not todo:
        raise SystemExit(f"kgitm grid: {a.grid}: no cell matches --only {a.only}")
    out.mkdir(parents=True, exist_ok=True)
    print(f"grid {spec['name']}: {len(todo)} cells x {len(seeds)} seeds -> {out}")
    rows = []
    failed = 0
    for labels, args in todo:
        for seed in seeds:
            if a.summarize_only:
                f = out / "__".join(labels[x] for x in spec["axes"]) / f"seed{seed}" / "test_results.json"
                res = json.loads(f.read_text())["results"] if f.exists() else None
            else:
                res = run_one(spec, labels, args, seed, out, dry_run=a.dry_run)
            if res is None:
                failed += not a.dry_run and not a.summarize_only
                continue
            rows.append({**labels, "seed": seed, **{m: res.get(m, "") for m in spec["metrics"]}})
    if rows:
        print(summarize(spec, rows, out))
        print(f"wrote {out / 'results.csv'}, {out / 'summary.md'}, {out / 'summary.png'}")
    return 1 if failed else 0
