"""The grid job: cell expansion, skipping finished runs, and the summary files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

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


def test_finished_runs_are_skipped_and_summarised(tmp_path, monkeypatch):
    spec_path = _spec(tmp_path)
    out = tmp_path / "out"
    values = {("a", "none"): [10.0, 14.0], ("a", "wordnet"): [20.0, 22.0], ("b", "none"): [5.0, 5.0], ("b", "wordnet"): [7.0, 9.0]}
    for (m, k), vs in values.items():
        for seed, v in enumerate(vs):
            f = out / f"{m}__{k}" / f"seed{seed}" / "test_results.json"
            f.parent.mkdir(parents=True)
            f.write_text(json.dumps({"results": {"rsum": v, "relation_swap_acc": 50.0}}))
    monkeypatch.setattr(grid.subprocess, "call", lambda *a, **k: pytest.fail("a finished run was started again"))
    assert grid.main([str(spec_path)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 8
    md = (out / "summary.md").read_text()
    assert "| a | wordnet | 2 | 21.0 ± 1.4 | 50.0 ± 0.0 |" in md
    assert "| a | none | 2 | 12.0 ± 2.8 |" in md
    assert (out / "summary.png").stat().st_size > 1000


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
    grid.run_one(spec, {"matcher": "a", "knowledge": "none"}, ["--trainer.max_epochs", "3"], 0, tmp_path / "out")
    fit = calls[0]
    assert fit.index("--trainer") < len(fit) - 1 - fit[::-1].index("--trainer.max_epochs")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "grid").glob("*.yaml")), ids=lambda p: p.name)
def test_every_committed_grid_names_existing_configs(path):
    from kgitm.cli.grid import cells, check_grid

    spec = check_grid(path)
    assert cells(spec) and spec["seeds"]
