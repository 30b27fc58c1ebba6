"""Load a trained run (config + checkpoint) outside the Lightning CLI, for scripts and analyses."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import yaml

from kgitm.cli.lightning import VOCAB_FILE, ConfigError, build_cli
from kgitm.lit.datamodule import PrecompDataModule
from kgitm.lit.module import MatchingModule
from kgitm.models.run import RunFolderError, run_files
from kgitm.models.matching import EncodedSplit

#: keys a saved ``kgitm fit|test`` config carries for its subcommand, not for the model or data.
_SUBCOMMAND_KEYS = ("ckpt_path", "verbose", "weights_only")


class RunLoadError(RunFolderError):
    """A run's config or checkpoint cannot be loaded; the message names the file and the fix."""


def load_run(
    config: str | os.PathLike, ckpt: str | os.PathLike, extra: list[str] | None = None, device: torch.device | str = "cpu"
) -> tuple[MatchingModule, PrecompDataModule]:
    """Instantiate a run from its config (as ``kgitm test`` would) and load its checkpoint weights.

    ``config`` may be an experiment config or the ``config.yaml`` a run saved (its subcommand keys
    such as ``ckpt_path`` are dropped); ``extra`` are further Lightning CLI arguments. The checkpoint
    is read with ``weights_only=True``: only tensors and plain containers are unpickled (the
    hyper-parameters kgitm saves are plain dicts, so Lightning checkpoints load). Returns the task in
    eval mode on ``device`` (its ``.model`` is the plain :class:`~kgitm.models.MatchingModel`) and the
    data module, with the model's caption transforms set.
    """
    config = Path(config)
    if not config.is_file():
        raise RunLoadError(f"{config}: no such config; pass an experiment config or a run's config.yaml")
    with open(config, encoding="utf-8") as f:
        parsed = yaml.safe_load(f)
    tmp = None
    if isinstance(parsed, dict) and any(k in parsed for k in _SUBCOMMAND_KEYS):
        for key in _SUBCOMMAND_KEYS:
            parsed.pop(key, None)
        # relative paths in a run's config are relative to the working directory, as for the CLI
        fd, tmp = tempfile.mkstemp(suffix=".yaml")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(parsed, f)
    try:
        cli = build_cli(["--config", tmp or str(config), *(extra or [])], run=False, save_config_callback=None)
    except ConfigError as err:
        raise RunLoadError(str(err).replace(str(tmp), str(config)) if tmp else str(err)) from None
    finally:
        if tmp is not None:
            os.unlink(tmp)
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunLoadError(f"{ckpt}: no such checkpoint; pass the .ckpt written by `kgitm fit`") from None
    try:
        cli.model.on_load_checkpoint(checkpoint)  # checkpoints of kgitm 0.1 lack the model. prefix
    except ValueError as err:
        raise RunLoadError(f"{ckpt}: {err}") from None
    try:
        cli.model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        lines = str(err).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(err)
        raise RunLoadError(
            f"{ckpt}: weights do not fit the model of {config} ({first}); pass the config (and "
            "overrides) the checkpoint was trained with"
        ) from None
    cli.datamodule.set_caption_transforms(cli.model.model.caption_transforms())
    return cli.model.eval().to(device), cli.datamodule


@torch.no_grad()
def encode_test(task: MatchingModule, dm: PrecompDataModule, device: torch.device | str = "cpu") -> EncodedSplit:
    """Encode the test split exactly as ``kgitm test`` does (each image once, at its first caption;
    :meth:`kgitm.models.MatchingModel.encode_split`); the encodings are returned on the CPU."""
    return task.model.encode_split(dm.test_dataloader(), device=device)


def open_run(
    run_dir: str | os.PathLike, extra: list[str] | None = None, device: torch.device | str = "cpu"
) -> tuple[MatchingModule, PrecompDataModule]:
    """:func:`load_run` on a run folder (:func:`run_files`), reading the run's vocabulary (``vocab.txt``)
    so that the training split is not opened."""
    config, ckpt = run_files(run_dir)
    vocab = Path(run_dir) / VOCAB_FILE
    args = (["--data.vocab_file", str(vocab)] if vocab.is_file() else []) + list(extra or [])
    return load_run(config, ckpt, args, device=device)
