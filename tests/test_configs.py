"""Every YAML file in configs/ parses and instantiates (data, model, trainer and experiment configs
through the real LightningCLI; job configs through their own parsers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
BASE = REPO / "configs" / "experiment" / "vsepp_synthscenes.yaml"


def _cli(args: list[str]):
    from kgitm.lit.cli import KgitmCLI, MatchingModule, PrecompDataModule

    return KgitmCLI(MatchingModule, PrecompDataModule, run=False, args=args)


def _needs_gpu(path: Path) -> bool:
    return "accelerator: gpu" in path.read_text()


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "configs")) for p in CONFIGS])
def test_config_instantiates(path: Path, tiny_synthscenes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kind = path.parent.name
    small = ["--data.root", str(tiny_synthscenes)]
    if kind == "experiment":
        args = ["--config", str(path), *small]
    elif kind == "model":
        args = ["--config", str(BASE), "--model", str(path), *small]
    elif kind == "data":
        args = ["--config", str(BASE), "--data", str(path), *small]
    elif kind == "trainer":
        args = ["--config", str(BASE), "--trainer", str(path), *small]
    elif kind == "size":
        args = ["--config", str(BASE), "--config", str(path), *small]
    elif kind == "knowledge":
        _knowledge_workspace(tmp_path, tiny_synthscenes, monkeypatch)
        args = ["--config", str(BASE), "--model.knowledge", str(path), *small]
    else:
        from kgitm.cli import config_loaders

        loader = config_loaders().get(kind)
        assert loader is not None, f"no loader registered for configs/{kind}/ in kgitm.cli.config_loaders()"
        loader(path, tiny_synthscenes)
        return
    if _needs_gpu(path) and not torch.cuda.is_available():
        _parse_only(args)
        pytest.skip(f"{path.name} asks for a GPU and none is present: parsed and validated, not instantiated")
    if kind == "knowledge" and "shared/data" in path.read_text() and not (Path.cwd().parent / "shared").exists():
        pytest.skip(f"{path.name} reads ../shared/data, which this machine does not have")
    cli = _cli(args)
    assert cli.model is not None and cli.datamodule is not None and cli.trainer is not None
    assert cli.model.text_encoder is not None and cli.model.matcher is not None


def _knowledge_workspace(tmp_path: Path, data: Path, monkeypatch) -> None:
    """A working folder laid out like the repository: a concept vocabulary built from the tiny
    training captions under graphs/, and ../shared/data beside it when this machine has it."""
    from conftest import shared_data_dir
    from kgitm.knowledge.builder import main as build

    work = tmp_path / "ws" / "repo"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    build([str(data / "train_caps.txt"), "--name", "synthscenes", "--objects", "20", "--properties", "5", "--motions", "3", "--no-progress"])
    if shared_data_dir().exists():
        (tmp_path / "ws" / "shared").symlink_to(shared_data_dir().parent)


def _parse_only(args: list[str]) -> None:
    from kgitm.lit.cli import KgitmCLI, MatchingModule, PrecompDataModule

    class ParseOnly(KgitmCLI):
        def instantiate_classes(self) -> None:  # parse and validate, do not build a GPU trainer
            pass

    ParseOnly(MatchingModule, PrecompDataModule, run=False, args=args)
