"""LightningCLI for kgitm: ``kgitm fit|validate|test|predict --config configs/experiment/X.yaml``.

Data-derived sizes are linked into the model (vocabulary size and words from the training captions,
region feature size from ``{split}_ims.npy``) and the joint size is set once (``model.embed_dim``,
linked into both encoders), so configs never repeat them. After ``test`` the retrieval table and
diagnostic accuracies are printed and written as JSON next to the logs; ``predict`` writes the test
similarity matrix as ``.npy`` (images x captions), readable by ``kgitm evaluate``.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import yaml
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from kgitm.core.io import DataFormatError, atomic_write_json, atomic_write_npy, atomic_write_text
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


#: the placeholder in trainer configs that becomes the run folder
RUN_DIR = "{run_dir}"
#: the vocabulary of a run, in its folder (one word per line, padding and unknown first)
VOCAB_FILE = "vocab.txt"


def _plain(value: Any) -> Any:
    return value.as_dict() if hasattr(value, "as_dict") else value


def experiment_name(args: list[str]) -> str:
    """The run's name: the experiment config's file name (``--config configs/experiment/X.yaml`` -> X),
    else the last ``--config`` file's, else ``default``."""
    configs = [Path(v) for f, v in zip(args, args[1:]) if f in ("--config", "-c") and v.endswith((".yaml", ".yml"))]
    experiments = [c for c in configs if c.parent.name == "experiment"]
    chosen = (experiments or configs or [None])[-1]
    return chosen.stem if chosen is not None else "default"


def run_dir_of_checkpoint(ckpt_path: Any) -> Optional[Path]:
    """The run folder of a checkpoint inside one (``RUN/checkpoints/NAME.ckpt`` -> ``RUN``)."""
    if not ckpt_path or str(ckpt_path) in ("last", "best", "hpc", "registry"):
        return None
    path = Path(str(ckpt_path))
    return path.parent.parent if path.parent.name == "checkpoints" else None


def fill_run_dir(value: Any, run_dir: str) -> Any:
    """``value`` (a config tree) with every ``{run_dir}`` in its strings replaced."""
    from jsonargparse import Namespace

    if isinstance(value, str):
        return value.replace(RUN_DIR, run_dir)
    if isinstance(value, Namespace):
        for key in list(vars(value)):
            setattr(value, key, fill_run_dir(getattr(value, key), run_dir))
        return value
    if isinstance(value, dict):
        return {k: fill_run_dir(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_run_dir(v, run_dir) for v in value]
    return value


def _as_list(value: Any) -> list:
    """A trainer's ``logger`` value as a list (Lightning takes one logger, a list, ``True`` or ``False``)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [] if value is None or isinstance(value, bool) else [value]


class KgitmCLI(LightningCLI):
    """The Lightning CLI with kgitm's run folders: a trainer config's ``{run_dir}`` becomes ``--run_dir``,
    or for evaluation the folder of ``--ckpt_path``, or ``runs/<experiment>/seed<seed>``; evaluation
    of a run reads its vocabulary (``vocab.txt``) instead of opening the training split and writes its
    results into the run folder."""

    run_dir: Optional[Path] = None

    def before_instantiate_classes(self) -> None:
        import os

        import torch

        cfg = self.config[self.subcommand] if self.subcommand else self.config
        trainer = cfg.get("trainer") or {}
        check_devices(trainer.get("accelerator"), trainer.get("devices"),
                      cuda_devices=torch.cuda.device_count() if torch.cuda.is_available() else 0, cpu_cores=os.cpu_count() or 1)
        self._resolve_run_dir(cfg)
        if trainer.get("enable_progress_bar") is None and not sys.stdout.isatty():
            trainer.enable_progress_bar = False  # a bar draws nothing useful in a log file: ProgressLines prints lines

    def _resolve_run_dir(self, cfg: Any) -> None:
        templated = RUN_DIR in json.dumps(_plain(cfg.get("trainer")), default=str)
        ckpt_run = run_dir_of_checkpoint(cfg.get("ckpt_path")) if self.subcommand != "fit" else None
        given = cfg.get("run_dir")
        run_dir = Path(given) if given else ckpt_run or Path("runs") / experiment_name(sys.argv[1:]) / f"seed{cfg.get('seed_everything')}"
        if self.subcommand != "fit":
            # An evaluation logs beside the training logs, not over them: a logger without a version writes
            # into save_dir/name itself, where Lightning's CSVLogger deletes the training run's metrics.csv.
            # That holds for the trainer file's "{run_dir}" loggers and for a finished run's own saved
            # config (RUN/logs/config.yaml, whose paths are filled in), the config a user evaluates with.
            for logger in _as_list(cfg.trainer.get("logger")):
                init = getattr(logger, "init_args", None)
                if init is not None and getattr(init, "version", None) == "":
                    init.version = self.subcommand
        if templated:
            fill_run_dir(cfg.trainer, str(run_dir))
            self.run_dir = run_dir
        root = self.run_dir or ckpt_run
        if self.subcommand != "fit" and root is not None and cfg.data.get("vocab_file") is None and (root / VOCAB_FILE).is_file():
            cfg.data.vocab_file = str(root / VOCAB_FILE)  # the run's vocabulary: train need not be opened
            rank_zero_info(f"vocabulary of the run: {cfg.data.vocab_file} (the training split is not opened)")

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.embed_dim", "model.image_encoder.init_args.embed_dim")
        parser.link_arguments("model.embed_dim", "model.text_encoder.init_args.embed_dim")
        parser.link_arguments("data.vocab_size", "model.text_encoder.init_args.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.vocab_words", "model.text_encoder.init_args.vocab_words", apply_on="instantiate")
        parser.link_arguments("data.feature_dim", "model.image_encoder.init_args.feature_dim", apply_on="instantiate")
        parser.add_argument(
            "--run_dir", type=Optional[str], default=None,
            help="the run folder (config, checkpoints, logs, vocabulary, results); default runs/<experiment>/seed<seed>, "
            "or for validate/test/predict the folder of --ckpt_path RUN/checkpoints/X.ckpt",
        )
        parser.add_argument("--results_file", type=Optional[str], default=None,
                            help="test: where to write the results JSON (default: RUN/results_<split>.json in a run folder)")
        parser.add_argument("--results_name", type=Optional[str], default=None, help="row name in the printed results table (default: the model's matcher class)")
        parser.add_argument(
            "--protocol", type=Optional[str], default=None,
            help="test: the retrieval protocol(s), comma-separated, among single, coco1k, coco5k (default: the data's "
            "test_protocols: single, or coco5k,coco1k for COCO); the first gives the headline test/* metrics, all are "
            "written to test_results.json under 'protocols' with kgitm evaluate's keys",
        )
        parser.add_argument("--sims_out", type=Optional[str], default=None, help="predict: where to write the similarity matrix (.npy); default <log dir>/test_sims.npy")

    def _out_dir(self) -> Path:
        """Where results go: the run folder, or an explicitly given ``trainer.default_root_dir``."""
        d = Path(self.run_dir or self.trainer.default_root_dir)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def before_fit(self) -> None:
        dm, trainer = self.datamodule, self.trainer
        if trainer.is_global_zero:  # the run's vocabulary, read back by its evaluations
            out = Path(trainer.default_root_dir)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / VOCAB_FILE, "".join(f"{w}\n" for w in dm.vocab.itos))
        self._check_step_memory()
        per_epoch = dm.train_batches_per_epoch(trainer.world_size)
        if 0 < trainer.max_steps < per_epoch and trainer.val_check_interval == 1.0 and trainer.limit_val_batches != 0:
            # a run shorter than an epoch would never validate (and keep no best checkpoint)
            trainer.val_check_interval = trainer.max_steps
            rank_zero_info(f"max_steps {trainer.max_steps} < {per_epoch} steps per epoch: validating at step {trainer.max_steps}")

    def _check_step_memory(self) -> None:
        """Print the activation memory of one training step's ``B x B`` pair scores (the matcher's own
        per-pair estimate, a lower bound: autograd keeps more, 2-5x as measured in docs/benchmarks.md) and
        refuse a step that cannot fit the device even so."""
        import torch

        dm, trainer, task = self.datamodule, self.trainer, self.model
        dm.set_caption_transforms(task.model.caption_transforms())  # as the task's setup does
        ds = dm.train_dataset()
        batch = ds.collator()([ds[i] for i in range(min(dm.hparams.batch_size, len(ds)))])
        with torch.no_grad():
            model = task.model
            images = model.encode_images(batch.images)
            captions = model.encode_captions(batch.captions)
            per_pair = model.matcher.pair_memory_bytes(images, captions)
        b = dm.hparams.batch_size
        need = per_pair * b * b
        params = sum(p.numel() * p.element_size() for p in task.parameters())
        device = trainer.strategy.root_device
        if device.type == "cuda":
            have, where = torch.cuda.get_device_properties(device).total_memory, f"{torch.cuda.get_device_name(device)}"
        else:
            import psutil

            have, where = psutil.virtual_memory().available, "available RAM"
        gib = 2**30
        rank_zero_info(
            f"memory per training step: at least {need / gib:.2f} GiB of pair activations ({b} x {b} pairs x "
            f"{per_pair / 2**10:.0f} KiB) + {4 * params / gib:.2f} GiB of weights, gradients and Adam state; "
            f"{have / gib:.1f} GiB {where}"
        )
        if need + 4 * params > have:
            smaller = max(1, int(b * ((have - 4 * params) / max(need, 1)) ** 0.5)) if have > 4 * params else 1
            raise ConfigError(
                f"one training step needs at least {(need + 4 * params) / gib:.1f} GiB but the device has {have / gib:.1f} GiB "
                f"({where}); lower --data.batch_size to at most {smaller} (memory grows with its square)"
            )

    def after_fit(self) -> None:
        ckpt = self.trainer.checkpoint_callback
        if self.trainer.is_global_zero and ckpt is not None and getattr(ckpt, "monitor", None) and not ckpt.best_model_path:
            print(
                f"kgitm fit: no best checkpoint: the run never logged {ckpt.monitor} (no validation ran: see "
                "trainer.limit_val_batches, check_val_every_n_epoch, val_check_interval); the last weights are in "
                f"{ckpt.last_model_path or ckpt.dirpath}", file=sys.stderr,
            )

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
        split = self.datamodule.hparams.test_split
        # in a run folder beside the run's own results; in an explicit folder as test_results.json
        given = self.config[self.subcommand].get("results_file")
        out = Path(given) if given else out_dir / (f"results_{split}.json" if self.run_dir else "test_results.json")
        atomic_write_json(out, {"name": self._name(), "models": 1, "split": split, "results": res, "protocols": protocols})
        print(f"results written to {out}")

    def after_predict(self) -> None:
        out_dir = self._out_dir()  # on every rank (a collective under DDP)
        if not self.trainer.is_global_zero:
            return
        sims = self.model.predicted_similarity
        split = self.datamodule.hparams.test_split
        default = out_dir / (f"sims_{split}.npy" if self.run_dir else "test_sims.npy")
        out = Path(self.config[self.subcommand].get("sims_out") or default)
        atomic_write_npy(out, sims.astype("float32"))
        print(f"similarity matrix {sims.shape} (images x captions) written to {out}; score it with: kgitm evaluate {out}")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


def quiet_dependencies() -> None:
    """Silence what every command printed before its own output and says nothing about the run: a
    dependency's deprecation warning (``LeafSpec``), Lightning's cloud advertisements and the seed line
    (the seed is always set, from the config). Real warnings stay."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropTips())
    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(_DropTips())
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)


def build_cli(args: list[str], **kwargs: Any) -> KgitmCLI:
    """A :class:`KgitmCLI` over ``args`` (``sys.argv`` is set to them for the call: LightningCLI reads
    it, and passing ``args=`` as well would make it warn). Extra ``kwargs`` go to the CLI."""
    check_config_args(args)
    with argv_as(args):
        return KgitmCLI(MatchingModule, PrecompDataModule, parser_kwargs={"default_env": False}, seed_everything_default=0, **kwargs)


def run_lightning_cli(args: list[str]) -> KgitmCLI:
    """``kgitm fit|validate|test|predict ARGS``."""
    quiet_dependencies()
    try:
        # the training config is config.yaml; an evaluation's is config_<command>.yaml beside it
        name = "config.yaml" if not args or args[0] == "fit" else f"config_{args[0]}.yaml"
        return build_cli(args, save_config_kwargs={"overwrite": True, "config_filename": name})
    except SIGTERMException:
        print(f"kgitm {args[0]}: stopped by SIGTERM after writing last.ckpt; resume with --ckpt_path last", file=sys.stderr)
        raise SystemExit(143) from None
    except (ConfigError, DataFormatError) as err:  # the message names the file and the fix
        print(f"kgitm {args[0] if args else ''}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
