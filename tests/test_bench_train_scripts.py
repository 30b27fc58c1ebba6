"""The training-step benchmarks run at tiny shapes, and their built-in checks hold: the vectorised
step's loss equals the public-style loop's (bench_train_step.py exits otherwise), with GSMN's
captions scored in chunks too."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TINY = ["--regions", "5", "--feature-dim", "24", "--embed-dim", "32", "--word-dim", "8", "--vocab", "60",
        "--min-words", "3", "--max-words", "7"]


@pytest.fixture()
def scripts_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    yield
    for name in ("bench_train_step", "bench_gsmn_train_chunk"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("chunk", ["none", "3"])
def test_train_step_bench_losses_agree_with_the_loop(scripts_on_path, tmp_path, chunk):
    import bench_train_step

    out = tmp_path / "step.json"
    rc = bench_train_step.main(["--methods", "scan_t2i,gsmn_sparse", "--batch", "7", "--steps", "1", "--threads", "1",
                                "--gsmn-train-chunk", chunk, "--output", str(out), *TINY])
    assert rc == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["gsmn_sparse"]["loss_rel_diff"] <= 1e-5 and rows["scan_t2i"]["loss_rel_diff"] <= 1e-5


def test_gsmn_chunk_bench_reports_every_setting(scripts_on_path, tmp_path):
    import bench_gsmn_train_chunk

    out = tmp_path / "chunks.json"
    assert bench_gsmn_train_chunk.main(["--chunks", "none,2,auto", "--steps", "1", "--batch", "5", "--threads", "1", "--output", str(out), *TINY]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["captions_per_chunk"] for r in rows] == [5, 2, 5]
    assert max(r["first_loss_rel_diff"] for r in rows) <= 1e-6


def test_train_chunk_argument_is_checked(scripts_on_path):
    import bench_train_step

    with pytest.raises(SystemExit):
        bench_train_step.main(["--gsmn-train-chunk", "many"])


def test_similarity_bench_compares_a_lower_matmul_precision(monkeypatch, tmp_path):
    """``--compare-precision`` computes the matrix again at that float32 matmul precision, reports how far it
    moved, and leaves the process at the precision it found."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import bench_similarity
    import torch

    try:
        out = tmp_path / "sims.json"
        rc = bench_similarity.main(["--images", "6", "--captions", "30", "--regions", "5", "--dim", "16", "--min-words", "3",
                                    "--max-words", "6", "--methods", "scan_t2i", "--loop-captions", "8", "--threads", "1",
                                    "--compare-precision", "high", "--output", str(out)])
        assert rc == 0 and torch.get_float32_matmul_precision() == "highest"
        row = json.loads(out.read_text())["results"][0]
        assert row["compare_precision"] == "high" and row["compare_precision_s"] > 0
        assert 0 <= row["compare_precision_max_abs_diff"] < 1e-2
        assert 0 <= row["compare_precision_top1_same_images"] <= 1 and 0 <= row["compare_precision_top1_same_captions"] <= 1
        a = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]])
        b = torch.tensor([[0.1, 0.8, 0.95], [0.5, 0.2, 0.3]])
        # rows: image 0's best caption changes (1 -> 2), image 1's stays; columns: caption 2's best image changes
        assert bench_similarity.top1_agreement(a, b) == pytest.approx((0.5, 2 / 3))
    finally:
        sys.modules.pop("bench_similarity", None)
