"""The grid job: matchers x knowledge sources x seeds through the Lightning CLI, one command.

``kgitm grid configs/grid/X.yaml`` runs every cell of the grid as its own ``kgitm fit`` followed by
``kgitm test`` on each evaluation split (separate processes, so one failing run does not stop the
others), skips work whose results already exist, and writes per evaluation split ``results_{split}.csv``
(one row per run), ``summary_{split}.md`` (mean, sample standard deviation and a 95% t-interval over
seeds per cell) and ``summary_{split}.png`` (bar chart with the intervals) into the grid's output
folder. Each run keeps its resolved config (``config.yaml``) beside its checkpoints and logs.

Honest use: choose designs and hyper-parameters on ``dev`` (``--splits dev``, or ``splits: [dev]`` in
the file), then run ``test`` once. Seeds can vary the data as well as the model (``data_seeds``).

Grid file::

    name: matchers
    out: runs/grid/matchers
    base: configs/experiment/vsepp_synthscenes.yaml   # data + model + trainer to start from
    trainer: configs/trainer/cpu.yaml                 # with {run_dir}: each run gets OUT/<cell>/seed<N>
    seeds: [0, 1, 2]
    splits: [dev, test]                               # evaluation splits (default: both)
    args: [--trainer.max_epochs, "10"]                # applied to every run
    data_seeds:                                       # optional: one data set per seed ({seed} is substituted)
      prepare:                                        # kgitm commands run once per seed, before its runs
        - [synthscenes, --out, "data/ss_seed{seed}", --seed, "{seed}"]
        - [preprocess, --config, configs/preprocess/synthscenes.yaml, --data-root, "data/ss_seed{seed}",
           --out, "graphs/ss_seed{seed}", --progress, "false"]
      args: [--data.root, "data/ss_seed{seed}", --data.graph_store, "graphs/ss_seed{seed}"]
    axes:                                             # one value per axis makes a cell
      matcher:
        vsepp: [--model, configs/model/vsepp.yaml]
        gsmn_sparse: [--model, configs/model/gsmn_sparse.yaml]
      knowledge:
        none: []
        wordnet: [--model.knowledge, configs/knowledge/wordnet.yaml]
    test_variants:                                    # optional: more test runs of the same checkpoint
      flipped:                                        # metrics reported as flipped/<metric>
        args: [--data.scene_graph_flip, "true"]
        cells: [sgm_oracle]                           # only these axis values (default: every cell)
    metrics: [rsum, relation_swap_acc, attribute_swap_acc, paraphrase_other_t2i_r1]

``{seed}`` is substituted in every argument of ``args``, ``data_seeds`` and the cells.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kgitm.core.io import atomic_open, atomic_write_text, savefig_atomic

DEFAULT_METRICS = ["rsum", "i2t_r1", "t2i_r1", "relation_swap_acc", "attribute_swap_acc", "paraphrase_other_t2i_r1"]
DEFAULT_SPLITS = ("dev", "test")
#: the trainer config of a grid's runs unless it names one (it must place the run with {run_dir})
DEFAULT_TRAINER = "configs/trainer/cpu.yaml"
#: two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (the interval over seeds)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_interval(values: np.ndarray) -> tuple[float, float, float, float]:
    """``(mean, sample sd, low, high)``: the 95% Student-t interval of the mean over seeds (the
    interval is the mean itself for one seed)."""
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return mean, 0.0, mean, mean
    sd = float(values.std(ddof=1))
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


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
    spec.setdefault("splits", list(DEFAULT_SPLITS))
    variants = spec.setdefault("test_variants", {})
    for name, v in list(variants.items()):
        variants[name] = {"args": v, "cells": None} if isinstance(v, list) else {"args": v.get("args", []), "cells": v.get("cells")}
    bad = [s for s in spec["splits"] if s not in DEFAULT_SPLITS]
    if bad:
        raise SystemExit(f"kgitm grid: {path}: splits must be among {list(DEFAULT_SPLITS)}, got {bad}")
    data_seeds = spec.get("data_seeds")
    if data_seeds is not None and not (isinstance(data_seeds, dict) and isinstance(data_seeds.get("args", []), list)):
        raise SystemExit(f"kgitm grid: {path}: data_seeds must be a mapping with 'prepare' (commands) and 'args'")
    return spec


def check_grid(path: Path) -> dict[str, Any]:
    """Load a grid file and check that every config file it names exists (relative to the repository)."""
    path = Path(path)
    spec = load_grid(path)
    root = path.resolve().parents[2] if path.resolve().parent.parent.name == "configs" else Path.cwd()
    names = [spec["base"], spec.get("trainer", DEFAULT_TRAINER)]

    def files(args: list[str]) -> list[str]:  # values, and --key=value / --key+=value forms
        return [a.split("=", 1)[-1] for a in map(str, args) if a.endswith((".yaml", ".yml")) and "{seed}" not in a]

    for _, args in cells(spec):
        names += files(args)
    names += files(spec["args"])
    for variant in spec["test_variants"].values():
        names += files(variant["args"])
    for n in names:
        if not (root / n).exists():
            raise SystemExit(f"kgitm grid: {path}: names {n}, which does not exist under {root}")
    trainer = root / spec.get("trainer", DEFAULT_TRAINER)
    if "{run_dir}" not in trainer.read_text():
        raise SystemExit(f"kgitm grid: {path}: its trainer config {trainer} does not place runs with {{run_dir}} "
                         "(see configs/trainer/cpu.yaml); the grid puts each run in its own folder")
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


def _with_seed(args: list[Any], seed: int) -> list[str]:
    return [str(a).replace("{seed}", str(seed)) for a in args]


def prepare_data(spec: dict[str, Any], seed: int, log_path: Path) -> None:
    """Run the grid's per-seed data commands (each ``kgitm`` job skips what is up to date)."""
    commands = (spec.get("data_seeds") or {}).get("prepare", [])
    if not commands:
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        for command in commands:
            step = [sys.executable, "-m", "kgitm", *_with_seed(command, seed)]
            rc = subprocess.call(step, stdout=log, stderr=subprocess.STDOUT)
            if rc != 0:
                raise SystemExit(f"kgitm grid: data for seed {seed}: `kgitm {' '.join(step[3:])}` failed (exit {rc}); see {log_path}")


def result_file(run_dir: Path, split: str, variant: str | None = None) -> Path:
    """Where ``kgitm test`` on ``split`` (and a test variant) leaves its results in a run folder."""
    stem = f"results_{split}" if variant is None else f"results_{split}_{variant}"
    return run_dir / f"{stem}.json"


def fit_args(spec: dict[str, Any], args: list[str], seed: int, trainer: Path | None) -> list[str]:
    """The ``kgitm fit`` arguments of one cell and seed (``kgitm test`` adds its split and checkpoint).

    Order matters: the base config, the cell's configs, the seed's data (an experiment config names
    its own data root), the run's trainer file (logs and checkpoints in the run folder), the cell's
    own ``--trainer.*`` overrides again (the trainer file would reset them), the grid-wide overrides.
    """
    seeded = _with_seed([*args, *(spec.get("data_seeds") or {}).get("args", [])], seed)
    trainer_part = [] if trainer is None else ["--trainer", str(trainer)]
    trainer_overrides = [x for i in range(len(seeded) - 1) if seeded[i].startswith("--trainer.") for x in seeded[i : i + 2]]
    return [
        "--config", str(spec["base"]),
        *seeded,
        *trainer_part,
        *trainer_overrides,
        *_with_seed(spec["args"], seed),
        "--seed_everything", str(seed),
    ]


def check_cell_args(spec: dict[str, Any], grid_path: Path) -> None:
    """Parse every cell's fit arguments (and each test variant's) with the Lightning CLI's parser,
    without building anything, so that a typo fails in a second instead of hours into the grid."""
    from kgitm.cli.lightning import ConfigError, KgitmCLI, argv_as, check_config_args
    from kgitm.lit.datamodule import PrecompDataModule
    from kgitm.lit.module import MatchingModule

    class ParseOnly(KgitmCLI):  # parse and validate only (the devices are the running machine's business)
        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

    trainer = spec.get("trainer", DEFAULT_TRAINER)
    seed = spec["seeds"][0]
    for labels, args in cells(spec):
        cell = "__".join(labels[a] for a in spec["axes"])
        variants = [[]] + [v["args"] for v in spec["test_variants"].values()
                          if v["cells"] is None or set(labels.values()) & set(v["cells"])]
        for extra in variants:
            argv = [*fit_args(spec, args, seed, Path(trainer)), *_with_seed(extra, seed)]
            try:
                check_config_args(argv)
                with argv_as(argv), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                    ParseOnly(MatchingModule, PrecompDataModule, run=False, parser_kwargs={"default_env": False})
            except ConfigError as e:
                raise SystemExit(f"kgitm grid: {grid_path}: cell {cell}: {e}") from None
            except SystemExit:
                text = err.getvalue()
                why = " ".join(ln.strip() for ln in text[text.find("error:"):].splitlines() if ln.strip())
                raise SystemExit(f"kgitm grid: {grid_path}: cell {cell}: the CLI refuses its arguments: {why}") from None


def run_one(
    spec: dict[str, Any], labels: dict[str, str], args: list[str], seed: int, out: Path, *,
    splits: list[str], dry_run: bool = False, env: dict[str, str] | None = None,
) -> dict[str, dict] | None:
    """Train one cell/seed and test it on ``splits`` (and the test variants) unless those results exist.

    Returns ``{split or split/variant: results}``, or ``None`` on failure.
    """
    cell = "__".join(labels[a] for a in spec["axes"])
    run_dir = out / cell / f"seed{seed}"
    variants = {None: [], **{name: v["args"] for name, v in spec["test_variants"].items()
                             if v["cells"] is None or set(labels.values()) & set(v["cells"])}}
    wanted = [(s, v) for s in splits for v in variants]
    if all(result_file(run_dir, s, v).exists() for s, v in wanted):
        return {s if v is None else f"{s}/{v}": json.loads(result_file(run_dir, s, v).read_text())["results"] for s, v in wanted}
    if dry_run:
        print(f"[dry run] {cell} seed {seed}: kgitm fit {' '.join(fit_args(spec, args, seed, None))}")
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd_base = [*fit_args(spec, args, seed, Path(spec.get("trainer", DEFAULT_TRAINER))), "--run_dir", str(run_dir)]
    log = open(run_dir / "run.log", "a")
    exe = [sys.executable, "-m", "kgitm"]
    t0 = time.time()
    best = run_dir / "checkpoints" / "best.ckpt"
    steps = []
    if not best.exists() or not (run_dir / "fit.done").exists():  # a stopped run resumes from its last checkpoint
        resume = ["--ckpt_path", "last"] if (run_dir / "checkpoints" / "last.ckpt").exists() else []
        steps.append(("fit", exe + ["fit", *cmd_base, *resume]))
    for split, variant in wanted:
        if result_file(run_dir, split, variant).exists():
            continue
        # the test step logs nothing (the run's training logs stay as they are)
        steps.append((f"test {split}" + (f" {variant}" if variant else ""), exe + [
            "test", *cmd_base, *_with_seed(variants[variant], seed), "--data.test_split", split,
            "--ckpt_path", str(best), "--trainer.logger", "false", "--results_file", str(result_file(run_dir, split, variant)),
            "--results_name", cell,
        ]))
    for step in steps:
        rc = subprocess.call(step[1], stdout=log, stderr=subprocess.STDOUT, env=env)
        if rc != 0:
            print(f"  {cell} seed {seed}: {step[0]} FAILED (exit {rc}); see {run_dir / 'run.log'}", flush=True)
            return None
        if step[0] == "fit":
            (run_dir / "fit.done").write_text(f"{time.time() - t0:.1f}\n")
    print(f"  {cell} seed {seed}: done in {time.time() - t0:.0f}s", flush=True)
    return {s if v is None else f"{s}/{v}": json.loads(result_file(run_dir, s, v).read_text())["results"] for s, v in wanted}


def summarize(spec: dict[str, Any], rows: list[dict], out: Path, split: str) -> str:
    """Write results_{split}.csv, summary_{split}.md and summary_{split}.png; return the Markdown table."""
    metrics = list(spec["metrics"])
    metrics += [f"{v}/{m}" for v in spec["test_variants"] for m in spec["metrics"]]
    axes = list(spec["axes"])
    with atomic_open(out / f"results_{split}.csv", "w") as f:
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
    stats: dict[tuple, dict[str, tuple[float, float, float, float]]] = {}
    for key, rs in groups.items():
        stats[key] = {}
        cells_txt = []
        for m in metrics:
            vals = np.array([r[m] for r in rs if m in r and r[m] != ""], dtype=float)
            if len(vals) == 0:
                cells_txt.append("-")
                continue
            stats[key][m] = t_interval(vals)
            mean, sd, lo, hi = stats[key][m]
            cells_txt.append(f"{mean:.1f} ± {sd:.1f} [{lo:.1f}, {hi:.1f}]")
        lines.append(f"| {' | '.join(key)} | {len(rs)} | " + " | ".join(cells_txt) + " |")
    table = "\n".join(lines) + "\n"
    note = (f"\n{split} split. Mean ± sample standard deviation [95% t-interval of the mean] over seeds; "
            f"grid `{spec['name']}`.\n")
    atomic_write_text(out / f"summary_{split}.md", table + note)
    _plot(stats, metrics, axes, out / f"summary_{split}.png", split)
    return table


def _plot(stats: dict, metrics: list[str], axes: list[str], path: Path, split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(stats)
    fig, subplots = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(subplots[0], metrics):
        means = np.array([stats[k].get(m, (np.nan, 0, np.nan, np.nan))[0] for k in keys])
        lows = np.array([stats[k].get(m, (np.nan, 0, np.nan, np.nan))[2] for k in keys])
        highs = np.array([stats[k].get(m, (np.nan, 0, np.nan, np.nan))[3] for k in keys])
        ax.bar(range(len(keys)), means, yerr=[means - lows, highs - means], capsize=3,
               color=[f"C{i % 10}" for i in range(len(keys))])
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(["\n".join(k) for k in keys], fontsize=7, rotation=0)
        ax.set_title(m, fontsize=9)
    fig.suptitle(" x ".join(axes) + f" on {split} (mean and 95% interval over seeds)", fontsize=9)
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="kgitm grid",
        description="Run a grid of matchers x knowledge sources x seeds (each cell: kgitm fit, then kgitm test on "
        "each evaluation split), skipping finished work, then write results_{split}.csv, summary_{split}.md "
        "(mean ± sd and a 95% interval over seeds) and summary_{split}.png.",
        epilog="The grid file format is documented in kgitm/cli/grid.py and configs/grid/*.yaml. Choose settings on "
        "dev (--splits dev), then run test once.",
    )
    p.add_argument("grid", type=Path, help="grid YAML file (e.g. configs/grid/matchers_synthscenes.yaml)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the grid's 'out')")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the grid's seeds")
    p.add_argument("--splits", nargs="+", choices=DEFAULT_SPLITS, default=None, help="evaluation splits (default: the grid's)")
    p.add_argument("--only", nargs="+", default=None, metavar="AXIS=VALUE", help="run only cells matching all of these")
    p.add_argument("--dry-run", action="store_true", help="list the runs without starting them")
    p.add_argument("--summarize-only", action="store_true", help="only rebuild the summaries from finished runs")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side (each gets cores/jobs threads; small CPU "
                   "models train faster this way than one run on every core); default 1")
    p.add_argument("--check", action="store_true", help="only parse every cell's arguments (done before any run anyway) and exit")
    a = p.parse_args(argv)
    spec = load_grid(a.grid)
    out = Path(a.out or spec["out"])
    seeds = a.seeds or spec["seeds"]
    splits = list(a.splits or spec["splits"])
    only = dict(x.split("=", 1) for x in (a.only or []))
    todo = [(lab, args) for lab, args in cells(spec) if all(lab.get(k) == v for k, v in only.items())]
    if not todo:
        raise SystemExit(f"kgitm grid: {a.grid}: no cell matches --only {a.only}")
    if not a.summarize_only:
        check_cell_args(spec, a.grid)
        if a.check:
            print(f"kgitm grid: {a.grid}: all {len(cells(spec))} cells parse")
            return 0
    out.mkdir(parents=True, exist_ok=True)
    print(f"grid {spec['name']}: {len(todo)} cells x {len(seeds)} seeds, evaluated on {', '.join(splits)} -> {out}")
    rows: dict[str, list[dict]] = {s: [] for s in splits}
    failed = 0
    runs = [(seed, labels, args) for seed in seeds for labels, args in todo]
    results: dict[int, dict | None] = {}
    if a.summarize_only:
        for n, (seed, labels, _) in enumerate(runs):
            run_dir = out / "__".join(labels[x] for x in spec["axes"]) / f"seed{seed}"
            files = {s if v is None else f"{s}/{v}": result_file(run_dir, s, v) for s in splits for v in [None, *spec["test_variants"]]}
            results[n] = {k: json.loads(f.read_text())["results"] for k, f in files.items() if f.exists()} or None
    elif a.jobs <= 1:
        for n, (seed, labels, args) in enumerate(runs):
            if not a.dry_run and (n == 0 or runs[n - 1][0] != seed):
                prepare_data(spec, seed, out / f"data_seed{seed}.log")
            results[n] = run_one(spec, labels, args, seed, out, splits=splits, dry_run=a.dry_run)
    else:  # every seed's data first, then the runs side by side, the cores shared out among them
        if not a.dry_run:
            for seed in seeds:
                prepare_data(spec, seed, out / f"data_seed{seed}.log")
        threads = str(max(1, (os.cpu_count() or 1) // a.jobs))
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        print(f"running {len(runs)} runs, {a.jobs} at a time with {threads} thread(s) each", flush=True)
        with ThreadPoolExecutor(a.jobs) as pool:
            futures = {pool.submit(run_one, spec, labels, args, seed, out, splits=splits, dry_run=a.dry_run, env=env): n
                       for n, (seed, labels, args) in enumerate(runs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
    for n, (seed, labels, _) in enumerate(runs):
        res = results[n]
        if res is None:
            failed += not a.dry_run and not a.summarize_only
            continue
        for split in splits:
            if split not in res:
                continue
            row = {**labels, "seed": seed, **{m: res[split].get(m, "") for m in spec["metrics"]}}
            for v in spec["test_variants"]:
                row.update({f"{v}/{m}": res.get(f"{split}/{v}", {}).get(m, "") for m in spec["metrics"]})
            rows[split].append(row)
    for split in splits:
        if rows[split]:
            print(f"== {split} ==")
            print(summarize(spec, rows[split], out, split))
            print(f"wrote {out / f'results_{split}.csv'}, {out / f'summary_{split}.md'}, {out / f'summary_{split}.png'}")
    return 1 if failed else 0
