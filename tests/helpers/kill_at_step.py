"""A callback for the resume test: the process sends itself a signal during training step ``step``
(as a scheduler's pre-emption would)."""

from __future__ import annotations

import os
import signal

import lightning as L


class SignalAtStep(L.Callback):
    def __init__(self, step: int, signum: str = "SIGTERM") -> None:
        self.step = step
        self.signum = getattr(signal, signum)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), self.signum)
