"""The grid job: cell expansion, skipping finished runs, and the summary files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from kgitm.cli import grid


def _spec(tmp_path: Path) -> Path:
    p = tmp_path / "g.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "out": str(tmp_path / "out"),
                "base": "configs/experiment/vsepp_synthscenes.yaml",
                "seeds": [0, 1],
                "axes": {"matcher": {"a": ["--x", "1"], "b": []}, "knowledge": {"none": [], "wordnet": ["--k", "w"]}},
                "metrics": ["rsum", "relation_swap_acc"],
            },
            sort_keys=False,
        )
    )
    return p


def test_cells_cover_the_product(tmp_path):
    spec = grid.load_grid(_spec(tmp_path))
    cs = grid.cells(spec)
    assert len(cs) == 4
    assert ({"matcher": "a", "knowledge": "wordnet"}, ["--x", "1", "--k", "w"]) in cs


def test_finished_runs_are_skipped_and_summarised_per_split_with_intervals(tmp_path, monkeypatch):
    spec_path = _spec(tmp_path)
    out = tmp_path / "out"
    values = {("a", "none"): [10.0, 14.0], ("a", "wordnet"): [20.0, 22.0], ("b", "none"): [5.0, 5.0], ("b", "wordnet"): [7.0, 9.0]}
    for (m, k), vs in values.items():
        for seed, v in enumerate(vs):
            run = out / f"{m}__{k}" / f"seed{seed}"
            run.mkdir(parents=True)
            for split, shift in (("dev", 100.0), ("test", 0.0)):
                (run / f"results_{split}.json").write_text(json.dumps({"results": {"rsum": v + shift, "relation_swap_acc": 50.0}}))
    monkeypatch.setattr(grid.subprocess, "call", lambda *a, **k: pytest.fail("a finished run was started again"))
    monkeypatch.setattr(grid, "check_cell_args", lambda spec, path: None)  # the cells' args here are placeholders
    assert grid.main([str(spec_path)]) == 0
    rows = list(csv.DictReader(open(out / "results_test.csv")))
    assert len(rows) == 8
    md = (out / "summary_test.md").read_text()
    # two seeds: t(0.975, 1) = 12.706, half-width 12.706 * sd / sqrt(2)
    assert "| a | wordnet | 2 | 21.0 ± 1.4 [8.3, 33.7] | 50.0 ± 0.0 [50.0, 50.0] |" in md
    assert "| a | none | 2 | 12.0 ± 2.8 [-13.4, 37.4] |" in md
    assert "121.0 ± 1.4" in (out / "summary_dev.md").read_text()
    assert (out / "summary_test.png").stat().st_size > 1000
    assert grid.main([str(spec_path), "--splits", "dev"]) == 0  # dev only: no test run needed


def test_t_interval_against_a_hand_computation():
    mean, sd, lo, hi = grid.t_interval(np.array([1.0, 2.0, 3.0]))
    assert (mean, sd) == (2.0, 1.0)
    assert hi - mean == pytest.approx(4.303 / np.sqrt(3), abs=1e-3) and lo == pytest.approx(2 * mean - hi)
    assert grid.t_interval(np.array([5.0])) == (5.0, 0.0, 5.0, 5.0)


def test_per_seed_data_commands_and_seed_substitution(tmp_path, monkeypatch):
    spec = grid.load_grid(_spec(tmp_path))
    spec["data_seeds"] = {"prepare": [["synthscenes", "--out", "data/s{seed}", "--seed", "{seed}"]],
                          "args": ["--data.root", "data/s{seed}"]}
    calls = []
    monkeypatch.setattr(grid.subprocess, "call", lambda cmd, **k: calls.append(cmd) or 0)
    grid.prepare_data(spec, 3, tmp_path / "log")
    assert calls[0][-5:] == ["synthscenes", "--out", "data/s3", "--seed", "3"]
    calls.clear()
    monkeypatch.setattr(grid.subprocess, "call", lambda cmd, **k: calls.append(cmd) or 1)
    assert grid.run_one(spec, {"matcher": "a", "knowledge": "none"}, ["--x", "{seed}"], 3, tmp_path / "o", splits=["dev"]) is None
    fit = calls[0]
    assert "data/s3" in fit and fit[fit.index("--x") + 1] == "3" and fit[fit.index("--seed_everything") + 1] == "3"


def test_bad_grid_file_is_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\naxes: {}\n")
    with pytest.raises(SystemExit, match=r"bad.yaml: missing key 'base'"):
        grid.load_grid(p)
    with pytest.raises(SystemExit, match="file not found"):
        grid.load_grid(tmp_path / "nope.yaml")


def test_unquoted_yaml_boolean_value_names_are_refused(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("name: x\nbase: b.yaml\naxes:\n  knowledge:\n    off: []\n")
    with pytest.raises(SystemExit, match="quote it"):
        grid.load_grid(p)


def test_cell_trainer_overrides_survive_the_run_trainer_file(tmp_path, monkeypatch):
    spec = grid.load_grid(_spec(tmp_path))
    calls = []
    monkeypatch.setattr(grid.subprocess, "call", lambda cmd, **k: calls.append(cmd) or 1)
    (tmp_path / "trainer.yaml").write_text("max_epochs: 10\n")
    spec["trainer"] = str(tmp_path / "trainer.yaml")
    grid.run_one(spec, {"matcher": "a", "knowledge": "none"}, ["--trainer.max_epochs", "3"], 0, tmp_path / "out", splits=["test"])
    fit = calls[0]
    assert fit.index("--trainer") < len(fit) - 1 - fit[::-1].index("--trainer.max_epochs")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "grid").glob("*.yaml")), ids=lambda p: p.name)
def test_every_committed_grid_names_existing_configs_and_parses(path):
    from kgitm.cli.grid import cells, check_cell_args, check_grid

    spec = check_grid(path)
    assert cells(spec) and spec["seeds"]
    check_cell_args(spec, path)  # every cell (and test variant) passes the Lightning CLI's parser


def test_a_cell_the_cli_refuses_is_named_before_any_run(tmp_path):
    from kgitm.cli.grid import check_cell_args, load_grid

    root = Path(__file__).resolve().parents[1]
    g = tmp_path / "g.yaml"
    g.write_text(
        f"name: g\nbase: {root}/configs/experiment/vsepp_synthscenes.yaml\ntrainer: {root}/configs/trainer/cpu.yaml\n"
        "axes:\n  matcher:\n    ok: []\n    yaml_bool: [--data.swap_predicates, '[on, under]']\n"
    )
    with pytest.raises(SystemExit, match=r"cell yaml_bool: the CLI refuses its arguments: .*data.swap_predicates"):
        check_cell_args(load_grid(g), g)


def test_jobs_run_side_by_side_with_the_cores_shared_and_summarise_as_one_job(tmp_path, monkeypatch):
    """``--jobs 2``: the same runs and the same summary as one job; each run gets cores/2 threads."""
    import threading

    active, peak, envs = [0], [0], []
    lock = threading.Lock()

    def fake_run(cmd, *, stdout=None, stderr=None, env=None):
        """Stands in for `kgitm fit` / `kgitm test`: writes what they leave behind."""
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            envs.append(env)
        try:
            import time

            time.sleep(0.05)
            if cmd[3] == "fit":
                ckpt = Path(cmd[cmd.index("--run_dir") + 1]) / "checkpoints"
                ckpt.mkdir(parents=True, exist_ok=True)
                (ckpt / "best.ckpt").write_text("x")
            else:
                seed = int(cmd[cmd.index("--seed_everything") + 1])
                cell = cmd[cmd.index("--results_name") + 1]
                Path(cmd[cmd.index("--results_file") + 1]).write_text(
                    json.dumps({"results": {"rsum": 100.0 * seed + len(cell), "relation_swap_acc": 50.0}}))
            return 0
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(grid.subprocess, "call", fake_run)
    monkeypatch.setattr(grid, "check_cell_args", lambda spec, path: None)
    monkeypatch.setattr(grid.os, "cpu_count", lambda: 4)
    spec_path = _spec(tmp_path)
    assert grid.main([str(spec_path), "--jobs", "2", "--splits", "test", "--out", str(tmp_path / "two")]) == 0
    assert peak[0] == 2 and all(e is not None and e["OMP_NUM_THREADS"] == "2" for e in envs)
    assert grid.main([str(spec_path), "--splits", "test", "--out", str(tmp_path / "one")]) == 0
    one = (tmp_path / "one" / "summary_test.md").read_text().replace(str(tmp_path / "one"), "")
    two = (tmp_path / "two" / "summary_test.md").read_text().replace(str(tmp_path / "two"), "")
    assert one == two and "| a | wordnet | 2 |" in one


def test_merge_grid_results_replaces_and_appends_rows(tmp_path, capsys):
    """``scripts/merge_grid_results.py``: a partial run's rows replace the recorded rows of the same cell and
    seed, new cells are appended, and the summary is the grid's own over the merged rows."""
    import importlib.util

    spec_ = importlib.util.spec_from_file_location("merge_grid_results", Path(__file__).resolve().parents[1] / "scripts/merge_grid_results.py")
    merge = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(merge)
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(yaml.safe_dump({
        "name": "g", "out": str(tmp_path / "out"), "base": "configs/experiment/vsepp_synthscenes.yaml", "seeds": [0, 1],
        "splits": ["test"], "axes": {"matcher": {"a": [], "b": [], "c": []}}, "metrics": ["rsum"],
    }))
    recorded, partial = tmp_path / "recorded", tmp_path / "partial"
    recorded.mkdir(), partial.mkdir()
    (recorded / "results_test.csv").write_text("matcher,seed,rsum\na,0,10\nb,0,20\na,1,12\nb,1,22\n")
    (partial / "results_test.csv").write_text("matcher,seed,rsum\nb,1,30\nc,0,40\nc,1,44\n")
    assert merge.main([str(grid_file), str(recorded), str(partial)]) == 0
    rows = list(csv.DictReader(open(recorded / "results_test.csv")))
    assert [(r["matcher"], r["seed"], float(r["rsum"])) for r in rows] == [
        ("a", "0", 10), ("b", "0", 20), ("c", "0", 40), ("a", "1", 12), ("b", "1", 30), ("c", "1", 44)]
    summary = (recorded / "summary_test.md").read_text()
    assert "| b | 2 | 25.0 ± 7.1" in summary and "| c | 2 | 42.0 ± 2.8" in summary
    assert (recorded / "summary_test.png").is_file()
    # only some cells, and a cell the grid does not have is an error naming it
    (partial / "results_test.csv").write_text("matcher,seed,rsum\nb,0,99\nz,0,1\n")
    assert merge.main([str(grid_file), str(recorded), str(partial), "--cells", "b"]) == 0
    assert [float(r["rsum"]) for r in csv.DictReader(open(recorded / "results_test.csv"))][1] == 99
    assert merge.main([str(grid_file), str(recorded), str(partial)]) == 2
    assert "cell ['z'] is not in" in capsys.readouterr().err
