"""DDP through the CLI as a user runs it: 2 processes on the CPU (gloo).

Train a few steps with ``--trainer.devices 2 --trainer.strategy ddp``, then validate, test and
predict the checkpoint with 1 and with 2 processes: every metric and the similarity matrix must be
the same (to 1e-6), and every rank's checkpoint callback must have seen the full-split RSUM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).resolve().parent / "helpers"

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")


def _kgitm(cwd: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run([sys.executable, "-m", "kgitm", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"kgitm {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


#: where the processes run: the CPU (gloo) in CI; scripts/gpu_check.sh sets ``gpu`` on a machine with 2+ GPUs (NCCL)
ACCELERATOR = os.environ.get("KGITM_DDP_ACCELERATOR", "cpu")


def _common(root: Path, devices: int, out: str) -> list[str]:
    return [
        "--config", str(REPO / "configs/experiment/vsepp_synthscenes.yaml"), "--data.root", str(root),
        "--trainer.accelerator", ACCELERATOR, "--trainer.devices", str(devices), "--trainer.strategy", "ddp",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", out,
        "--model.embed_dim", "64", "--model.text_encoder.init_args.word_dim", "32",
    ]


def _read(d: Path, name: str) -> dict:
    return json.loads((d / name).read_text())


@pytest.fixture(scope="module")
def ddp_run(tiny_synthscenes, tmp_path_factory):
    work = tmp_path_factory.mktemp("ddp")
    _kgitm(work, "fit", *_common(tiny_synthscenes, 2, "fit"), "--trainer.max_epochs", "2",
           "--trainer.callbacks+=ddp_record.RecordEvalMetrics", "--trainer.callbacks.out", "rec")
    ckpt = next((work / "fit").rglob("last.ckpt"), None) or next(work.rglob("last.ckpt"))
    for devices in (1, 2):
        for stage in ("validate", "test"):
            _kgitm(work, stage, *_common(tiny_synthscenes, devices, f"{stage}{devices}"), "--trainer.logger", "false",
                   "--trainer.callbacks", "ddp_record.RecordEvalMetrics", "--trainer.callbacks.out", "rec", "--ckpt_path", str(ckpt))
        _kgitm(work, "predict", *_common(tiny_synthscenes, devices, f"predict{devices}"), "--trainer.logger", "false",
               "--trainer.callbacks", "null", "--ckpt_path", str(ckpt), "--sims_out", f"sims{devices}.npy")
    return work


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_two_processes_report_the_one_process_metrics_on_every_rank(ddp_run, stage):
    rec = ddp_run / "rec"
    one = _read(rec, f"{stage}_rank0_of1.json")
    assert one[f"{'val' if stage == 'validate' else 'test'}/rsum"] > 0
    for rank in (0, 1):
        two = _read(rec, f"{stage}_rank{rank}_of2.json")
        assert set(two) == set(one)
        for key in one:
            assert two[key] == pytest.approx(one[key], abs=1e-6), f"{stage} {key}: rank {rank} of 2 vs one process"


def test_the_results_file_and_the_similarity_matrix_match_one_process(ddp_run):
    one = _read(next((ddp_run / "test1").rglob("test_results.json")).parent, "test_results.json")
    two = _read(next((ddp_run / "test2").rglob("test_results.json")).parent, "test_results.json")
    assert one["results"].keys() == two["results"].keys()
    for key, value in one["results"].items():
        assert two["results"][key] == pytest.approx(value, abs=1e-6), key
    a, b = np.load(ddp_run / "sims1.npy"), np.load(ddp_run / "sims2.npy")
    assert a.shape == b.shape == (16, 80)  # the whole tiny test split, no rank's share
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)


def test_every_rank_checkpoints_on_the_full_split_rsum(ddp_run):
    rec = ddp_run / "rec"
    last = max(int(p.name.split("_")[1][5:]) for p in rec.glob("fit_epoch*_rank0_of2.json"))
    epochs = [[_read(rec, f"fit_epoch{e}_rank{r}_of2.json")["val/rsum"] for r in (0, 1)] for e in range(last + 1)]
    for e, (r0, r1) in enumerate(epochs):
        assert r0 == r1, f"epoch {e}: the ranks saw different validation RSUM ({r0} vs {r1})"
    # the last epoch's weights are last.ckpt: its one-process validation is what the ranks saw
    assert epochs[-1][0] == pytest.approx(_read(rec, "validate_rank0_of1.json")["val/rsum"], abs=1e-6)
    for r in (0, 1):
        final = _read(rec, f"fit_epoch{last}_rank{r}_of2.json")
        assert final["best_model_score"] == pytest.approx(max(e[0] for e in epochs), abs=1e-6)
