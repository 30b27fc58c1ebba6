"""LightningCLI for kgitm: ``kgitm fit|validate|test|predict --config configs/experiment/X.yaml``.

Data-derived sizes are linked into the model (vocabulary size and words from the training captions,
region feature size from ``{split}_ims.npy``) and the joint size is set once (``model.embed_dim``,
linked into both encoders), so configs never repeat them. After ``test`` the retrieval table and
diagnostic accuracies are printed and written as JSON next to the logs; ``predict`` writes the test
similarity matrix as ``.npy`` (images x captions), readable by ``kgitm evaluate``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import yaml
from lightning.pytorch.cli import LightningCLI

from kgitm.core.io import DataFormatError, atomic_write_json, atomic_write_npy
from kgitm.eval.metrics import PROTOCOLS
from kgitm.eval.report import format_retrieval_table
from kgitm.lit.datamodule import PrecompDataModule
from kgitm.lit.module import MatchingModule

#: keys of the model group that configs written for kgitm 0.1 used, and what replaced them
LEGACY_MODEL_KEYS = {
    "hardest_negative_warmup_epochs": "model.loss[RetrievalHinge].warmup_epochs",
    "relation_swap_weight": "a kgitm.models.losses.RelationSwapHinge entry of model.loss",
    "relation_swap_pairs": "RelationSwapHinge.pairs",
    "rotated_image_weight": "a kgitm.models.losses.RotatedImageHinge entry of model.loss",
}
#: encoder sizes that are linked from model.embed_dim and must not be set directly
LINKED_SIZES = ("image_encoder", "text_encoder")


class ConfigError(ValueError):
    """A config cannot be used as written; the message names the file and the fix."""


@contextmanager
def argv_as(args: list[str]) -> Iterator[None]:
    """``sys.argv`` set to ``[program, *args]`` for the duration (LightningCLI and its launcher read it)."""
    saved = sys.argv
    sys.argv = [saved[0], *args]
    try:
        yield
    finally:
        sys.argv = saved


def _config_files(args: list[str]) -> list[tuple[str, Path]]:
    """``(group, path)`` of every YAML file named in ``args`` (``--config F``, ``--model F``, ...),
    with the files those name in turn (``model: ../model/x.yaml``)."""
    found: list[tuple[str, Path]] = []
    todo: list[tuple[str, Path]] = []
    for flag, value in zip(args, args[1:]):
        if flag.startswith("--") and value.endswith((".yaml", ".yml")):
            group = flag[2:].split("=")[0]
            todo.append(("" if group == "config" else group, Path(value)))
    while todo:
        group, path = todo.pop()
        if not path.is_file() or (group, path) in found:
            continue
        found.append((group, path))
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and group == "":
            for key, value in data.items():
                if isinstance(value, str) and value.endswith((".yaml", ".yml")):
                    todo.append((key, (path.parent / value)))
    return found


def check_config_args(args: list[str]) -> None:
    """Refuse, with one line naming the file and the fix, a config written for kgitm 0.1 and an encoder
    size set where ``model.embed_dim`` would silently override it.

    Raises:
        ConfigError: the first problem found.
    """
    for flag in args:
        for part in LINKED_SIZES:
            if flag.startswith(f"--model.{part}.init_args.embed_dim"):
                raise ConfigError(f"{flag}: the encoders' size is linked from model.embed_dim; pass --model.embed_dim instead")
    for group, path in _config_files(args):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            continue
        model = data if group == "model" else data.get("model") if group == "" else None
        if not isinstance(model, dict):
            continue
        legacy = [k for k in LEGACY_MODEL_KEYS if k in model]
        loss = model.get("loss")
        if isinstance(loss, dict) and str(loss.get("class_path", "")).endswith("ContrastiveLoss"):
            legacy.append("loss")
        if legacy:
            raise ConfigError(
                f"{path}: written for kgitm 0.1 (model.{legacy[0]}); convert it with "
                f"`kgitm upgrade-config {path} --out NEW.yaml` (loss terms are now a list, model.loss)"
            )
        for part in LINKED_SIZES:
            init = (model.get(part) or {}).get("init_args") if isinstance(model.get(part), dict) else None
            if isinstance(init, dict) and "embed_dim" in init:
                raise ConfigError(
                    f"{path}: sets model.{part}.init_args.embed_dim, which model.embed_dim overrides; "
                    f"set model.embed_dim once instead (`kgitm upgrade-config {path} --out NEW.yaml` does it)"
                )


def check_devices(accelerator: Any, devices: Any, *, cuda_devices: int, cpu_cores: int) -> None:
    """Refuse a device request this machine cannot meet, in one line naming the option (Lightning
    fails later with a traceback, or on the CPU starts as many processes as asked)."""
    acc = str(accelerator or "auto").lower()
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    wanted = len(devices) if isinstance(devices, (list, tuple)) else devices if isinstance(devices, int) and devices > 0 else None
    if acc in ("gpu", "cuda"):
        if cuda_devices == 0:
            raise ConfigError(
                f"--trainer.accelerator {accelerator}: this machine has no CUDA GPU (torch.cuda.is_available() is false); "
                "use --trainer configs/trainer/cpu.yaml or --trainer.accelerator cpu"
            )
        if wanted is not None and wanted > cuda_devices:
            raise ConfigError(f"--trainer.devices {devices}: this machine has {cuda_devices} CUDA GPU(s); ask for at most {cuda_devices}")
    elif acc == "cpu" and wanted is not None and wanted > cpu_cores:
        raise ConfigError(
            f"--trainer.devices {devices} on the CPU starts {wanted} processes but this machine has {cpu_cores} cores; "
            f"ask for at most {cpu_cores}"
        )


class KgitmCLI(LightningCLI):
    def before_instantiate_classes(self) -> None:
        import os

        import torch

        cfg = self.config[self.subcommand] if self.subcommand else self.config
        trainer = cfg.get("trainer") or {}
        check_devices(trainer.get("accelerator"), trainer.get("devices"),
                      cuda_devices=torch.cuda.device_count() if torch.cuda.is_available() else 0, cpu_cores=os.cpu_count() or 1)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.embed_dim", "model.image_encoder.init_args.embed_dim")
        parser.link_arguments("model.embed_dim", "model.text_encoder.init_args.embed_dim")
        parser.link_arguments("data.vocab_size", "model.text_encoder.init_args.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.vocab_words", "model.text_encoder.init_args.vocab_words", apply_on="instantiate")
        parser.link_arguments("data.feature_dim", "model.image_encoder.init_args.feature_dim", apply_on="instantiate")
        parser.add_argument("--results_name", type=Optional[str], default=None, help="row name in the printed results table (default: the model's matcher class)")
        parser.add_argument(
            "--protocol", type=Optional[str], default=None,
            help="test: the retrieval protocol(s), comma-separated, among single, coco1k, coco5k (default: the data's "
            "test_protocols: single, or coco5k,coco1k for COCO); the first gives the headline test/* metrics, all are "
            "written to test_results.json under 'protocols' with kgitm evaluate's keys",
        )
        parser.add_argument("--sims_out", type=Optional[str], default=None, help="predict: where to write the similarity matrix (.npy); default <log dir>/test_sims.npy")

    def _out_dir(self) -> Path:
        d = self.trainer.log_dir or self.trainer.default_root_dir
        Path(d).mkdir(parents=True, exist_ok=True)
        return Path(d)

    def _name(self) -> str:
        cfg = self.config[self.subcommand]
        return cfg.get("results_name") or type(self.model.matcher).__name__

    def before_test(self) -> None:
        given = self.config[self.subcommand].get("protocol")
        protocols = list(self.datamodule.hparams.test_protocols)
        if given:
            protocols = [p.strip() for p in str(given).split(",") if p.strip()]
            bad = [p for p in protocols if p not in PROTOCOLS]
            if bad or not protocols:
                raise SystemExit(f"kgitm test: error: --protocol {given}: choose among {', '.join(PROTOCOLS)} (comma-separated)")
            self.model.protocol_override = protocols
        try:
            self.datamodule.check_test_protocols(protocols)
        except ValueError as err:
            raise SystemExit(f"kgitm test: error: {err}") from None

    def after_test(self) -> None:
        out_dir = self._out_dir()  # on every rank: the trainer's log_dir is a collective under DDP
        if not self.trainer.is_global_zero:
            return
        res = self.model.test_results
        protocols = self.model.test_protocol_results
        where = f"{self.datamodule.hparams.root} / {self.datamodule.hparams.test_split}"
        first = next(iter(protocols), "single")
        print(format_retrieval_table({self._name(): res}, title=f"test: {where} (protocol {first})"))
        for name, metrics in list(protocols.items())[1:]:
            table = {f"fold {i}": fold for i, fold in enumerate(metrics.get("folds", []))} | {f"{self._name()}": metrics}
            print(format_retrieval_table(table, title=f"test: {where} (protocol {name})"))
        out = out_dir / "test_results.json"
        atomic_write_json(out, {"name": self._name(), "results": res, "protocols": protocols})
        print(f"results written to {out}")

    def after_predict(self) -> None:
        out_dir = self._out_dir()  # on every rank (a collective under DDP)
        if not self.trainer.is_global_zero:
            return
        sims = self.model.predicted_similarity
        out = Path(self.config[self.subcommand].get("sims_out") or out_dir / "test_sims.npy")
        atomic_write_npy(out, sims.astype("float32"))
        print(f"similarity matrix {sims.shape} (images x captions) written to {out}; score it with: kgitm evaluate {out}")


def build_cli(args: list[str], **kwargs: Any) -> KgitmCLI:
    """A :class:`KgitmCLI` over ``args`` (``sys.argv`` is set to them for the call: LightningCLI reads
    it, and passing ``args=`` as well would make it warn). Extra ``kwargs`` go to the CLI."""
    check_config_args(args)
    with argv_as(args):
        return KgitmCLI(MatchingModule, PrecompDataModule, parser_kwargs={"default_env": False}, **kwargs)


def run_lightning_cli(args: list[str]) -> KgitmCLI:
    """``kgitm fit|validate|test|predict ARGS``."""
    try:
        return build_cli(args, save_config_kwargs={"overwrite": True})
    except (ConfigError, DataFormatError) as err:  # the message names the file and the fix
        print(f"kgitm {args[0] if args else ''}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
