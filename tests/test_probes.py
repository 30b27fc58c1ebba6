"""The evidence probes behind docs/benchmarks.md: ``scripts/probe_flip_overlap.py`` (how much the
subject-object flip changes a split's visual scene graphs) and the pure parts of
``scripts/probe_swap_margins.py`` (margins, ties, saturation, the other-image reassignment), and ``scripts/plot_val_curves.py`` (validation curves of several
runs from their CSV logs); the probe of a trained run is tested with the other trained runs in
tests/test_explain_report.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kgitm.graphs.scene_graph_json import VisualSceneGraph, read_motifs_predictions

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _graph(relations: list[tuple[int, str, int]], n: int, region_index: list[int] | None = None) -> VisualSceneGraph:
    return VisualSceneGraph(image_id="x", labels=[f"o{k}" for k in range(n)], attributes=[[] for _ in range(n)],
                            boxes=torch.zeros(n, 4), relations=relations, region_index=region_index)


# ------------------------------------------------------------------------------------------ flip overlap


def test_flip_overlap_counts_a_hand_made_case() -> None:
    probe = _script("probe_flip_overlap")
    graphs = [
        # both directions of (0, 1) and one of (1, 2): 2 of 3 relations have their reverse; the flip changes it
        _graph([(0, "on", 1), (1, "near", 0), (1, "on", 2)], 3),
        # both directions only (two predicates on one direction count once): unchanged by the flip
        _graph([(0, "on", 1), (0, "near", 1), (1, "under", 0)], 2),
        # objects point at regions 5 and 7: the pairs are of regions
        _graph([(0, "on", 1)], 2, region_index=[7, 5]),
    ]
    swap_pairs = {0: (1, 2), 1: (1, 0), 2: (7, 5)}
    r = probe.overlap(graphs, swap_pairs)
    assert r["images"] == 3 and r["edges"] == pytest.approx((3 + 2 + 1) / 3)
    assert r["reverse_kept"] == pytest.approx(100 * 4 / 6)  # (0,1),(1,0) | (0,1),(1,0) of 6 kept pairs
    assert r["unchanged_images"] == pytest.approx(100 / 3)
    assert r["swap_pairs"] == 3
    assert r["swap_pair_forward"] == pytest.approx(100.0)
    assert r["swap_pair_reverse"] == pytest.approx(100 / 3) and r["swap_pair_both"] == pytest.approx(100 / 3)


def test_flip_overlap_reads_the_graphs_sgm_reads(tiny_synthscenes, tmp_path, capsys) -> None:
    """The probe's pairs are those of the graph store the data pipeline serves (same top-k, same region
    indices), and its 'unchanged' images are exactly those the pipeline's flip leaves unchanged."""
    from kgitm.cli import preprocess
    from kgitm.pipeline.graph_provider import GraphProvider

    probe = _script("probe_flip_overlap")
    store = tmp_path / "graphs"
    assert preprocess.main(["--config", str(REPO / "configs/preprocess/synthscenes.yaml"), "--data-root", str(tiny_synthscenes),
                            "--splits", "test", "--out", str(store), "--progress", "false"]) == 0
    provider = GraphProvider(store, data_root=tiny_synthscenes, splits=("test",))
    for preset in ("predcls", "sgdet"):
        from_json = read_motifs_predictions(tiny_synthscenes / f"test_scene_graphs_{preset}.json", top_k=probe.DEFAULT_VISUAL_TOP_K)
        flips = []
        for i, g in enumerate(from_json):
            served = provider.image("test", i, preset)
            pairs = probe.region_pairs(served)
            assert probe.region_pairs(g) == pairs, (preset, i)
            flipped = {(o, s) for s, o in pairs}  # the pipeline's flip exchanges rel_subj and rel_obj
            flips.append(flipped == pairs)
        out = tmp_path / f"{preset}.json"
        assert probe.main([str(tiny_synthscenes), "--output", str(out)]) == 0
        rows = json.loads(out.read_text())["sources"]
        assert rows[preset]["unchanged_images"] == pytest.approx(100 * np.mean(flips))
    lines = [x for x in (tiny_synthscenes / "diagnostics/test_relation_swap.jsonl").read_text().splitlines() if x.strip()]
    assert rows["oracle"]["swap_pairs"] == len(lines) > 0
    assert rows["oracle"]["swap_pair_forward"] == 100.0  # the oracle holds each swap pair in its true direction
    assert "sgdet" in capsys.readouterr().out


def test_flip_overlap_names_a_missing_file(tmp_path, capsys) -> None:
    probe = _script("probe_flip_overlap")
    assert probe.main([str(tmp_path)]) == 2
    assert "test_scene_graphs.json: missing" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- swap margins


def test_margins_on_hand_made_scores() -> None:
    probe = _script("probe_swap_margins")
    pos = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    neg = np.array([0.0, 2.0, 1.0, 4.5], dtype=np.float32)
    r = probe.margins(pos, neg)
    assert r["pairs"] == 4 and r["accuracy"] == pytest.approx(50.0)  # the tie counts as a failure
    assert r["ties"] == pytest.approx(25.0)
    assert r["margin_min"] == pytest.approx(-0.5) and r["margin_median"] == pytest.approx(0.5)  # of -0.5, 0, 1, 2
    assert r["median_margin_sd"] == pytest.approx(0.5 / pos.std())
    assert r["at_max"] == pytest.approx(100 / 8)  # only 4.5 of the 8 scores


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_other_images_never_keep_a_pairs_image(seed) -> None:
    probe = _script("probe_swap_margins")
    one_per_image = np.arange(9)
    out = probe.other_images(one_per_image, seed)
    assert sorted(out) == list(one_per_image) and not np.any(out == one_per_image)
    repeated = np.array([0, 0, 0, 1, 2, 2])  # several pairs on one image: none may land on its own
    out = probe.other_images(repeated, seed)
    assert sorted(out) == sorted(repeated) and not np.any(out == repeated)
    with pytest.raises(ValueError, match="two different images"):
        probe.other_images(np.array([3, 3]), seed)


# ------------------------------------------------------------------------------------------ two-stage over seeds


def _two_stage_json(path: Path, exhaustive: float, coarse: float, rows: list[tuple[int, float, float]],
                    ensemble: float | None = None, weight: float = 0.0) -> Path:
    """A file in bench_two_stage.py's layout (the keys the summary reads)."""
    path.write_text(json.dumps({
        "coarse": {"results": {"rsum": coarse}},
        "expensive": {"results": {"rsum": exhaustive}},
        "two_stage": [{"k": k, "rsum": rsum, "reduction": red} for k, rsum, red in rows],
        "coarse_weight": weight,
        "ensemble": None if ensemble is None else {"results": {"rsum": ensemble}},
    }))
    return path


def test_two_stage_seeds_against_a_plain_computation(tmp_path) -> None:
    mod = _script("two_stage_seeds")
    files = [
        _two_stage_json(tmp_path / "s0.json", 500.0, 480.0, [(5, 490.0, 60.0), (10, 500.5, 30.0)]),
        _two_stage_json(tmp_path / "s1.json", 510.0, 470.0, [(10, 509.5, 30.2), (5, 505.0, 59.0)]),
        _two_stage_json(tmp_path / "s2.json", 520.0, 490.0, [(5, 512.0, 61.0), (10, 521.0, 29.8)]),
    ]
    summary = mod.summarise(mod.load(files), tolerance=1.0, min_reduction=10.0)
    by_k = {row["k"]: row for row in summary["rows"]}
    # k = 5: differences -10, -5, -8; k = 10: +0.5, -0.5, +1.0 (rows found by k, not by position)
    assert by_k[5]["rsum_diff_per_seed"] == [-10.0, -5.0, -8.0]
    diff10 = np.array([0.5, -0.5, 1.0])
    mean, sd, lo, hi = by_k[10]["rsum_diff"]
    half = 4.303 * diff10.std(ddof=1) / np.sqrt(3)   # t(0.975, 2 dof), as tabled to 3 decimals
    assert mean == pytest.approx(diff10.mean()) and sd == pytest.approx(diff10.std(ddof=1))
    assert (lo, hi) == pytest.approx((diff10.mean() - half, diff10.mean() + half))
    assert by_k[10]["reduction"] == pytest.approx(30.0)
    assert summary["coarse"][0] == pytest.approx(480.0)
    # the goal asks the interval's lower end to stay within the tolerance: k = 5 fails, and k = 10 fails
    # too (mean +0.33, but 3 seeds give a wide interval: lo = -1.56 < -1); a looser tolerance admits it
    assert lo < -1.0 and by_k[5]["goal_met_interval"] is False and by_k[10]["goal_met_interval"] is False
    # every seed of k = 10 is within 1 point (-0.5 is the worst); k = 5 is not
    assert by_k[10]["goal_met_every_seed"] is True and by_k[5]["goal_met_every_seed"] is False
    loose = {row["k"]: row for row in mod.summarise(mod.load(files), tolerance=2.0, min_reduction=10.0)["rows"]}
    assert loose[10]["goal_met_interval"] is True and loose[5]["goal_met_interval"] is False
    strict = {row["k"]: row for row in mod.summarise(mod.load(files), tolerance=1.0, min_reduction=31.0)["rows"]}
    assert strict[10]["goal_met_every_seed"] is False   # 30x fewer is not 31x
    assert "| 10 | 30.0x |" in mod.markdown(summary) and "| met | not met |" in mod.markdown(summary)


def test_two_stage_seeds_compares_weighted_rows_with_the_ensemble(tmp_path) -> None:
    mod = _script("two_stage_seeds")
    files = [_two_stage_json(tmp_path / f"{i}.json", 500.0 + i, 480.0, [(5, 510.0 + 2 * i, 60.0)], ensemble=512.0 + i, weight=0.5)
             for i in range(3)]
    summary = mod.summarise(mod.load(files))
    # two-stage minus ensemble: -2, -1, 0
    assert summary["rows"][0]["rsum_diff_ensemble"][:2] == pytest.approx((-1.0, 1.0))
    assert summary["ensemble"][0] == pytest.approx(513.0) and summary["coarse_weight"] == 0.5
    assert "RSUM - ensemble" in mod.markdown(summary)
    plain = mod.summarise(mod.load([_two_stage_json(tmp_path / f"p{i}.json", 500.0, 480.0, [(5, 500.0, 60.0)]) for i in range(2)]))
    assert plain["ensemble"] is None and "RSUM - ensemble" not in mod.markdown(plain)


def test_two_stage_seeds_refuses_mismatched_files(tmp_path) -> None:
    mod = _script("two_stage_seeds")
    a = _two_stage_json(tmp_path / "a.json", 500.0, 480.0, [(5, 490.0, 60.0)])
    b = _two_stage_json(tmp_path / "b.json", 500.0, 480.0, [(10, 490.0, 30.0)])
    with pytest.raises(SystemExit, match="different shortlist sizes"):
        mod.load([a, b])
    mixed = _two_stage_json(tmp_path / "m.json", 500.0, 480.0, [(5, 490.0, 60.0)], ensemble=505.0, weight=0.5)
    with pytest.raises(SystemExit, match="different --coarse-weight"):
        mod.summarise(mod.load([a, mixed]))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit, match="bad.json: no 'two_stage'"):
        mod.load([bad])


# ------------------------------------------------------------------------------------------ validation curves


def _log(run: Path, rows: list[str]) -> Path:
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "metrics.csv").write_text("epoch,step,train/loss,val/rsum\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return run


def test_val_curves_read_each_validation_in_step_order_and_plot(tmp_path, capsys) -> None:
    plot = _script("plot_val_curves")
    a = _log(tmp_path / "a", ["0,9,3.0,", "0,9,,100.5", "1,19,2.0,", "1,19,,250.0", "2,29,,240.0"])
    b = _log(tmp_path / "b", ["1,19,,300.0", "0,9,,200.0"])  # out of order in the file
    assert plot.val_curve(a, "val/rsum") == [(9.0, 100.5), (19.0, 250.0), (29.0, 240.0)]
    assert plot.val_curve(b, "val/rsum") == [(9.0, 200.0), (19.0, 300.0)]
    out = tmp_path / "pics" / "curves.png"
    assert plot.main(["--run", f"A={a}", "--run", f"B={b}", "--hline", "260", "--output", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "A: best val/rsum 250.0 at step 19 (3 validations; last 240.0)" in printed
    assert "B: best val/rsum 300.0 at step 19 (2 validations; last 300.0)" in printed


def test_val_curves_name_the_log_and_the_fix(tmp_path) -> None:
    plot = _script("plot_val_curves")
    with pytest.raises(SystemExit, match="no CSV log"):
        plot.val_curve(tmp_path / "missing", "val/rsum")
    run = _log(tmp_path / "a", ["0,9,3.0,"])
    with pytest.raises(SystemExit, match=r"metrics.csv: no val/rsum logged; name a logged column with --metric"):
        plot.val_curve(run, "val/rsum")
    with pytest.raises(SystemExit):
        plot.main(["--run", "no-label", "--output", str(tmp_path / "x.png")])
