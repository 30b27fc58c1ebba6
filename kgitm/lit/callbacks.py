"""Callbacks for long runs: exact resume, a checkpoint before pre-emption, progress lines in log files.

The trainer configs (``configs/trainer/*.yaml``) name them; each works on its own.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from kgitm.pipeline.sampling import ResumableSampler

__all__ = ["ExactResume", "ProgressLines"]

#: key of this module's state in a checkpoint
RESUME_KEY = "kgitm_resume"


def _rng_state() -> dict[str, Any]:
    """The global generators (torch, numpy, python) as tensors and ints (readable with ``weights_only``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss"]))


def _train_sampler(trainer: L.Trainer) -> Optional[ResumableSampler]:
    loader = trainer.train_dataloader
    sampler = getattr(loader, "sampler", None)
    return sampler if isinstance(sampler, ResumableSampler) else None


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where ``last.ckpt`` goes: the folder of the first checkpoint callback, else ``default_root_dir/checkpoints``."""
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            return Path(cb.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class ExactResume(L.Callback):
    """Makes a run resumed from any checkpoint, also one written inside an epoch, continue exactly as
    the uninterrupted run would (bit for bit on the CPU), and writes ``last.ckpt`` before the process
    is stopped by SIGTERM (Lightning stops after the current step) or SIGUSR1 (Slurm's warning signal
    with ``--signal=USR1@90``; the run stops after the current step).

    A checkpoint carries the global random generators and the training sampler's position (the seed of
    the epoch's order and the batches trained on in it). On resume the sampler continues that order,
    and the generators are restored at the first training step (after the data loader's iterator, which
    draws from them, is made).
    """

    def __init__(self) -> None:
        self._pending: Optional[dict[str, Any]] = None
        self._signalled: Optional[str] = None
        self._previous_usr1: Any = None

    # -- checkpoint contents
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        sampler = _train_sampler(trainer)
        state: dict[str, Any] = {"rng": _rng_state(), "sampler": None}
        if sampler is not None:
            done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
            inside = 0 < done < trainer.num_training_batches  # at an epoch's end the next epoch starts afresh
            batch = getattr(trainer.train_dataloader, "batch_size", None) or 1
            state["sampler"] = {"epoch_seed": sampler.epoch_seed, "skip": done * batch} if inside else None
        checkpoint[RESUME_KEY] = state

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(RESUME_KEY)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending and self._pending.get("sampler"):
            sampler = _train_sampler(trainer)
            if sampler is not None:
                sampler.resume(self._pending["sampler"]["epoch_seed"], int(self._pending["sampler"]["skip"]))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            _set_rng_state(self._pending["rng"])
            self._pending = None

    # -- pre-emption
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and hasattr(signal, "SIGUSR1"):
            try:
                self._previous_usr1 = signal.signal(signal.SIGUSR1, self._on_usr1)
            except ValueError:  # not the main thread
                self._previous_usr1 = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self._signalled = "SIGUSR1"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        why = self._signalled or ("SIGTERM" if trainer.received_sigterm else None)
        if why is None:
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        rank_zero_info(f"{why}: checkpoint of step {trainer.global_step} written to {path}; resume with --ckpt_path last")
        if self._signalled:
            self._signalled = None
            trainer.should_stop = True


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class ProgressLines(L.Callback):
    """Plain progress lines for log files (batch jobs, ``nohup``, Slurm), where a progress bar draws
    nothing until the end: one line every ``every_n_steps`` optimiser steps or ``every_s`` seconds,
    whichever comes first, with the epoch, step, loss, steps/s and the time left; the CSV logs are
    written out at the same time. Silent when stdout is a terminal (the progress bar is there) unless
    ``always``.

    Args:
        every_n_steps: a line at least this often (default 50).
        every_s: a line at least this often in seconds (default 30).
        always: print also when stdout is a terminal.
    """

    def __init__(self, every_n_steps: int = 50, every_s: float = 30.0, always: bool = False) -> None:
        self.every_n_steps = every_n_steps
        self.every_s = every_s
        self.always = always
        self._t0 = self._last = 0.0
        self._step0 = self._last_step = 0

    def _active(self, trainer: L.Trainer) -> bool:
        return trainer.is_global_zero and (self.always or not sys.stdout.isatty())

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._last = time.monotonic()
        self._step0 = self._last_step = trainer.global_step
        if self._active(trainer):
            total = trainer.estimated_stepping_batches
            print(f"[train] start at step {trainer.global_step} of {total}, epoch {trainer.current_epoch}", flush=True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._active(trainer):
            return
        now, step = time.monotonic(), trainer.global_step
        if step - self._last_step < self.every_n_steps and now - self._last < self.every_s:
            return
        rate = (step - self._step0) / max(now - self._t0, 1e-9)
        total = trainer.estimated_stepping_batches
        left = (total - step) / rate if rate > 0 and math.isfinite(total) else float("nan")
        loss = trainer.callback_metrics.get("train/loss")
        loss_txt = f" loss {float(loss):.4f}" if loss is not None else ""
        eta = _duration(left) if math.isfinite(left) else "?"
        print(f"[train] epoch {trainer.current_epoch} step {step}/{total}{loss_txt} {rate:.2f} steps/s ETA {eta}", flush=True)
        for logger in trainer.loggers:
            logger.save()
        self._last, self._last_step = now, step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active(trainer) and not trainer.sanity_checking and "val/rsum" in trainer.callback_metrics:
            print(f"[val] epoch {trainer.current_epoch} step {trainer.global_step} rsum {float(trainer.callback_metrics['val/rsum']):.2f}", flush=True)
