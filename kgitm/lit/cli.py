"""LightningCLI for kgitm: ``kgitm fit|validate|test|predict --config configs/experiment/X.yaml``.

Data-derived sizes are linked into the model (vocabulary size and words from the training captions,
region feature size from ``{split}_ims.npy``), so configs never repeat them. After ``test`` the retrieval
table and diagnostic accuracies are printed and written as JSON next to the logs; ``predict`` writes
the test similarity matrix as ``.npy`` (images x captions), readable by ``kgitm evaluate``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np
from lightning.pytorch.cli import LightningCLI

from kgitm.data.datamodule import PrecompDataModule
from kgitm.eval.report import format_retrieval_table, write_json
from kgitm.lit.module import MatchingModule


class KgitmCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.text_encoder.init_args.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.vocab_words", "model.text_encoder.init_args.vocab_words", apply_on="instantiate")
        parser.link_arguments("data.feature_dim", "model.image_encoder.init_args.feature_dim", apply_on="instantiate")
        parser.add_argument("--results_name", type=Optional[str], default=None, help="row name in the printed results table (default: the model's matcher class)")
        parser.add_argument("--sims_out", type=Optional[str], default=None, help="predict: where to write the similarity matrix (.npy); default <log dir>/test_sims.npy")

    def _out_dir(self) -> Path:
        d = self.trainer.log_dir or self.trainer.default_root_dir
        Path(d).mkdir(parents=True, exist_ok=True)
        return Path(d)

    def _name(self) -> str:
        cfg = self.config[self.subcommand]
        return cfg.get("results_name") or type(self.model.matcher).__name__

    def after_test(self) -> None:
        if not self.trainer.is_global_zero:
            return
        res = self.model.test_results
        print(format_retrieval_table({self._name(): res}, title=f"test: {self.datamodule.hparams.root} / {self.datamodule.hparams.test_split}"))
        out = self._out_dir() / "test_results.json"
        write_json(out, {"name": self._name(), "results": res})
        print(f"results written to {out}")

    def after_predict(self) -> None:
        if not self.trainer.is_global_zero:
            return
        sims = self.model.predicted_similarity
        out = Path(self.config[self.subcommand].get("sims_out") or self._out_dir() / "test_sims.npy")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp.npy")
        np.save(tmp, sims.astype(np.float32))
        os.replace(tmp, out)
        print(f"similarity matrix {sims.shape} (images x captions) written to {out}; score it with: kgitm evaluate {out}")


def run_lightning_cli(args: list[str]) -> KgitmCLI:
    # LightningCLI reads sys.argv itself; set it for this call only (passing args= as well makes it warn)
    saved = sys.argv
    sys.argv = [saved[0], *args]
    try:
        return KgitmCLI(
            MatchingModule,
            PrecompDataModule,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"default_env": False},
        )
    finally:
        sys.argv = saved
