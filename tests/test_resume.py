"""Long runs: a run stopped inside an epoch and resumed ends exactly like the uninterrupted run.

Through the CLI as a user runs it (``kgitm fit ... --ckpt_path last``) with the repository's CPU
trainer config (run folder, step checkpoints, :class:`kgitm.lit.callbacks.ExactResume`), on tiny
SynthScenes: 10 steps per epoch, a step checkpoint every 3 steps, 2 epochs.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).resolve().parent / "helpers"
pytestmark = pytest.mark.slow


def _trainer(tmp: Path) -> Path:
    """configs/trainer/cpu.yaml with a step checkpoint every 3 steps (the file itself says 500)."""
    cfg = yaml.safe_load((REPO / "configs/trainer/cpu.yaml").read_text())
    for cb in cfg["callbacks"]:
        if "every_n_train_steps" in cb.get("init_args", {}):
            cb["init_args"]["every_n_train_steps"] = 3
    path = tmp / "trainer.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _fit(tmp: Path, data: Path, run: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPERS), str(REPO), os.environ.get("PYTHONPATH", "")])}
    args = [
        sys.executable, "-m", "kgitm", "fit", "--config", str(REPO / "configs/experiment/vsepp_synthscenes.yaml"),
        "--trainer", str(_trainer(tmp)), "--data.root", str(data), "--data.batch_size", "32",
        "--model.embed_dim", "64", "--model.text_encoder.init_args.word_dim", "32",
        "--trainer.max_epochs", "2", "--run_dir", str(tmp / run), *extra,
    ]
    return subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _val_rsum(run: Path) -> list[float]:
    rows = list(csv.DictReader(open(run / "logs" / "metrics.csv")))
    return [float(r["val/rsum"]) for r in rows if r.get("val/rsum")]


@pytest.fixture(scope="module")
def uninterrupted(tiny_synthscenes, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    proc = _fit(tmp, tiny_synthscenes, "whole")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, tmp / "whole"


@pytest.mark.parametrize(("signum", "stop_step", "resumed_from"), [("SIGTERM", 7, 7), ("SIGKILL", 8, 6)])
def test_a_run_stopped_inside_an_epoch_resumes_to_the_uninterrupted_result(uninterrupted, tiny_synthscenes, signum, stop_step, resumed_from):
    """SIGTERM (a scheduler's pre-emption): last.ckpt is written at the step it arrives in. SIGKILL:
    nothing can be written, the run resumes from the step checkpoint before it."""
    tmp, whole = uninterrupted
    run = f"stopped_{signum}"
    first = _fit(tmp, tiny_synthscenes, run, "--trainer.callbacks+=kill_at_step.SignalAtStep",
                 "--trainer.callbacks.step", str(stop_step), "--trainer.callbacks.signum", signum)
    assert first.returncode != 0
    if signum == "SIGTERM":
        assert first.returncode == 143 and "resume with --ckpt_path last" in first.stderr
    ckpt = _weights(tmp / run)
    assert ckpt["global_step"] == resumed_from and ckpt["epoch"] == 0  # inside the first epoch (10 steps)
    second = _fit(tmp, tiny_synthscenes, run, "--ckpt_path", "last")
    assert second.returncode == 0, second.stderr[-3000:]
    a, b = _weights(whole), _weights(tmp / run)
    assert a["global_step"] == b["global_step"] == 20
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), f"{key} differs after resuming"
    assert _val_rsum(tmp / run)[-1] == _val_rsum(whole)[-1]
    assert (tmp / run / "checkpoints" / "best.ckpt").exists()


def _kgitm(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "kgitm", *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=600)


def test_evaluating_a_run_reads_its_vocabulary_and_never_the_training_split(uninterrupted, tiny_synthscenes):
    import shutil

    tmp, whole = uninterrupted
    data = tmp / "test_only"
    data.mkdir(exist_ok=True)
    for f in tiny_synthscenes.iterdir():
        if not f.name.startswith("train_") and f.is_file():
            shutil.copy(f, data / f.name)
    (data / "diagnostics").mkdir(exist_ok=True)
    for f in (tiny_synthscenes / "diagnostics").iterdir():
        shutil.copy(f, data / "diagnostics" / f.name)
    common = ["--config", str(REPO / "configs/experiment/vsepp_synthscenes.yaml"), "--data.root", str(data),
              "--model.embed_dim", "64", "--model.text_encoder.init_args.word_dim", "32"]
    proc = _kgitm(tmp, "test", *common, "--ckpt_path", str(whole / "checkpoints" / "best.ckpt"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (whole / "results_test.json").exists()  # beside the run, not in a new version folder
    assert (whole / "vocab.txt").read_text().splitlines()[:2] == ["<pad>", "<unk>"]
    # another vocabulary: one line naming the fix, before any weight is loaded
    other = tmp / "other_vocab.txt"
    other.write_text("<pad>\n<unk>\nzebra\n")
    proc = _kgitm(tmp, "test", *common, "--ckpt_path", str(whole / "checkpoints" / "best.ckpt"), "--data.vocab_file", str(other),
                  "--model.text_encoder.init_args.vocab_size", "3")
    assert proc.returncode != 0 and "trained with another vocabulary" in proc.stderr and "Traceback" not in proc.stderr


def test_a_run_shorter_than_an_epoch_still_validates_and_keeps_a_best_checkpoint(tiny_synthscenes, tmp_path):
    proc = _fit(tmp_path, tiny_synthscenes, "short", "--trainer.max_steps", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "short" / "checkpoints" / "best.ckpt").exists()
    assert _val_rsum(tmp_path / "short")
    assert "[train] epoch 0 step" in proc.stdout or "[val] epoch 0 step 3" in proc.stdout  # progress lines in a log file


def test_a_step_that_cannot_fit_in_memory_is_refused_before_training(tiny_synthscenes, tmp_path):
    proc = _kgitm(tmp_path, "fit", "--config", str(REPO / "configs/experiment/scan_t2i_synthscenes.yaml"), "--data.root", str(tiny_synthscenes),
                  "--data.batch_size", "3000000", "--run_dir", str(tmp_path / "huge"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "lower --data.batch_size to at most" in proc.stderr
    proc = _fit(tmp_path, tiny_synthscenes, "fine", "--trainer.max_steps", "1")
    assert "memory per training step: at least" in proc.stdout + proc.stderr


def test_evaluating_a_run_from_its_saved_config_keeps_its_training_logs(uninterrupted, tiny_synthscenes) -> None:
    """`kgitm test/predict --config RUN/logs/config.yaml` (the saved config, its logger paths filled in)
    once logged into RUN/logs itself, where Lightning's CSVLogger deleted the training metrics.csv."""
    tmp, whole = uninterrupted
    logs = whole / "logs"
    before = {p.name: p.read_bytes() for p in logs.iterdir() if p.is_file()}
    assert "metrics.csv" in before and _val_rsum(whole)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for sub, extra in (("predict", ["--sims_out", str(tmp / "sims.npy")]), ("test", [])):
        proc = subprocess.run([sys.executable, "-m", "kgitm", sub, "--config", str(logs / "config.yaml"),
                               "--ckpt_path", str(whole / "checkpoints" / "best.ckpt"), *extra],
                              cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (logs / sub).is_dir()  # the evaluation's own logs, beside the training ones
    after = {p.name: p.read_bytes() for p in logs.iterdir() if p.is_file()}
    assert after == before
    assert (tmp / "sims.npy").is_file()
