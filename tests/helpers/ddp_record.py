"""A callback for the DDP tests: every rank writes the evaluation metrics it holds (what its
``ModelCheckpoint`` reads) to ``OUT/{stage}_rank{r}_of{w}.json``."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class RecordEvalMetrics(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def _dump(self, trainer: L.Trainer, stage: str) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "test/"))}
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and ckpt.best_model_score is not None:
            metrics["best_model_score"] = float(ckpt.best_model_score)
        (self.out / f"{stage}_rank{trainer.global_rank}_of{trainer.world_size}.json").write_text(json.dumps(metrics))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._dump(trainer, "validate" if trainer.state.fn == "validate" else f"fit_epoch{trainer.current_epoch}")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._dump(trainer, "test")
