"""Load a trained run (config + checkpoint) outside the Lightning CLI, for scripts and analyses."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from lightning.fabric.utilities.apply_func import move_data_to_device

from kgitm.data.datamodule import PrecompDataModule
from kgitm.lit.cli import KgitmCLI
from kgitm.lit.module import MatchingModule
from kgitm.matchers.base import EncodedCaptions, EncodedImages

#: keys a saved ``kgitm fit|test`` config carries for its subcommand, not for the model or data.
_SUBCOMMAND_KEYS = ("ckpt_path", "verbose", "weights_only")


class RunLoadError(ValueError):
    """A run's config or checkpoint cannot be loaded; the message names the file and the fix."""


def load_run(
    config: str | os.PathLike, ckpt: str | os.PathLike, extra: list[str] | None = None, device: torch.device | str = "cpu"
) -> tuple[MatchingModule, PrecompDataModule]:
    """Instantiate a run from its config (as ``kgitm test`` would) and load its checkpoint weights.

    ``config`` may be an experiment config or the ``config.yaml`` a run saved (its subcommand keys
    such as ``ckpt_path`` are dropped); ``extra`` are further Lightning CLI arguments. The checkpoint
    is read with ``weights_only=True``: only tensors and plain containers are unpickled (the
    hyper-parameters kgitm saves are plain dicts, so Lightning checkpoints load). Returns the model
    in eval mode on ``device`` and the (not yet set up) data module.
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
    argv, sys.argv = sys.argv, sys.argv[:1]  # the CLI parses `args`, not the caller's arguments
    try:
        cli = KgitmCLI(
            MatchingModule,
            PrecompDataModule,
            run=False,
            args=["--config", tmp or str(config), *(extra or [])],
            save_config_callback=None,
            parser_kwargs={"default_env": False},
        )
    finally:
        sys.argv = argv
        if tmp is not None:
            os.unlink(tmp)
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    except FileNotFoundError:
        raise RunLoadError(f"{ckpt}: no such checkpoint; pass the .ckpt written by `kgitm fit`") from None
    try:
        cli.model.load_state_dict(state)
    except RuntimeError as err:
        lines = str(err).splitlines()
        first = lines[1].strip() if len(lines) > 1 else str(err)
        raise RunLoadError(
            f"{ckpt}: weights do not fit the model of {config} ({first}); pass the config (and "
            "overrides) the checkpoint was trained with"
        ) from None
    return cli.model.eval().to(device), cli.datamodule


@torch.no_grad()
def encode_test(model: MatchingModule, dm: PrecompDataModule, device: torch.device | str = "cpu") -> tuple[EncodedImages, EncodedCaptions]:
    """Encode the test split exactly as ``kgitm test`` does (each image once, at its first caption).

    Uses the module's evaluation helpers (``_eval_start/_eval_step/_eval_matrices``), the same code
    the validation, test and predict loops run; the encodings are returned on the CPU.
    """
    model._eval_start()
    for batch in dm.test_dataloader():
        model._eval_step(move_data_to_device(batch, torch.device(device)))
    images, captions = model._eval_matrices()
    model._eval = {}
    return images, captions
