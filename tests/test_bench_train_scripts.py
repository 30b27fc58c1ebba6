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
