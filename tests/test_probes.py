"""The evidence probes behind docs/benchmarks.md: ``scripts/probe_flip_overlap.py`` (how much the
subject-object flip changes a split's visual scene graphs) and the pure parts of
``scripts/probe_swap_margins.py`` (margins, ties, saturation, the other-image reassignment); the probe of a
trained run is tested with the other trained runs in tests/test_explain_report.py."""

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
