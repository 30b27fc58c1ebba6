"""Every YAML file in configs/ parses, instantiates and, where it makes a model, runs one training step
(data, model, loss, knowledge, size and experiment configs through the real LightningCLI, then one
forward and backward pass on a tiny batch; trainer configs are instantiated; job configs go through
their own parsers). A size mismatch between parts, a loss term that needs data the config does not
ask for, or a knowledge source that cannot map the words fails here."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
BASE = REPO / "configs" / "experiment" / "vsepp_synthscenes.yaml"
SMALL = ["--model.embed_dim", "32", "--model.text_encoder.init_args.word_dim", "16", "--data.batch_size", "8"]


def _cli(args: list[str]):
    from kgitm.cli.lightning import build_cli

    return build_cli(args, run=False)


def _needs_gpu(path: Path) -> bool:
    return "accelerator: gpu" in path.read_text()


@pytest.fixture(scope="module")
def tiny_graphs(tiny_synthscenes, tmp_path_factory) -> Path:
    """Graph stores of the tiny data (dependency graphs, textual and visual scene graphs)."""
    from kgitm.cli import preprocess

    out = tmp_path_factory.mktemp("graphs") / "tiny"
    assert preprocess.main(["--config", str(REPO / "configs/preprocess/synthscenes.yaml"), "--data-root", str(tiny_synthscenes),
                            "--out", str(out), "--progress", "false"]) == 0
    return out


def _one_step(cli) -> None:
    """One training step of the instantiated model on a tiny batch: finite loss, gradients reach it."""
    task, dm = cli.model, cli.datamodule
    dm.set_caption_transforms(task.model.caption_transforms())
    batch = next(iter(dm.train_dataloader()))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.trainer.*reference is not registered")
        loss = task.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.parameters())


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "configs")) for p in CONFIGS])
def test_config_instantiates_and_trains_one_step(path: Path, tiny_synthscenes, tiny_graphs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kind = path.parent.name
    text = path.read_text()
    data = ["--data.root", str(tiny_synthscenes)]
    graphs = ["--data.graph_store", str(tiny_graphs)]
    if "graph_store" in text or "graphs.yaml" in text or "scene_graphs.yaml" in text or kind == "loss":
        data += graphs
    small = SMALL if "TransformerTextEncoder" not in text else ["--model.embed_dim", "32", "--data.batch_size", "8"]
    if kind == "experiment":
        args = ["--config", str(path), *data, *SMALL]
    elif kind == "model":
        args = ["--config", str(BASE), "--model", str(path), *data, *small]
        if "sgm.SGM" in text or "cora.CORA" in text or "graph: sparse" in text:  # these matchers read graphs from the stores
            args += ["--data", str(REPO / "configs/data/synthscenes_scene_graphs.yaml"), *data, *graphs]
    elif kind == "data":
        args = ["--config", str(BASE), "--data", str(path), *data, *SMALL]
    elif kind == "loss":  # a loss term appended to a box-aware matcher's list, with the data it needs
        gsmn = REPO / "configs/experiment/gsmn_sparse_synthscenes.yaml"
        args = ["--config", str(gsmn), *data, *SMALL, "--data.relation_swap_negatives", "true", f"--model.loss+={path}"]
    elif kind == "trainer":
        args = ["--config", str(BASE), "--trainer", str(path), *data]
    elif kind == "size":
        args = ["--config", str(BASE), "--config", str(path), *data]
    elif kind == "knowledge":
        _knowledge_workspace(tmp_path, tiny_synthscenes, monkeypatch)
        args = ["--config", str(BASE), "--model.knowledge", str(path), *data, *SMALL]
    else:
        from kgitm.cli import config_loaders

        loader = config_loaders().get(kind)
        assert loader is not None, f"no loader registered for configs/{kind}/ in kgitm.cli.config_loaders()"
        loader(path, tiny_synthscenes)
        return
    if _needs_gpu(path) and not torch.cuda.is_available():
        _parse_only(args)
        pytest.skip(f"{path.name} asks for a GPU and none is present: parsed and validated, not instantiated")
    if kind == "knowledge" and "shared/data" in text and not (Path.cwd().parent / "shared").exists():
        pytest.skip(f"{path.name} reads ../shared/data, which this machine does not have")
    cli = _cli(args)
    assert cli.model is not None and cli.datamodule is not None and cli.trainer is not None
    assert cli.model.text_encoder is not None and cli.model.matcher is not None
    if kind != "trainer":
        _one_step(cli)


def _knowledge_workspace(tmp_path: Path, data: Path, monkeypatch) -> None:
    """A working folder laid out like the repository: a concept vocabulary built from the tiny
    training captions under graphs/, and ../shared/data beside it when this machine has it."""
    from conftest import shared_data_dir
    from kgitm.cli.build_concepts import main as build

    work = tmp_path / "ws" / "repo"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    build([str(data / "train_caps.txt"), "--name", "synthscenes", "--objects", "20", "--properties", "5", "--motions", "3", "--no-progress"])
    if shared_data_dir().exists():
        (tmp_path / "ws" / "shared").symlink_to(shared_data_dir().parent)


def _parse_only(args: list[str]) -> None:
    from kgitm.cli.lightning import KgitmCLI, MatchingModule, PrecompDataModule, argv_as

    class ParseOnly(KgitmCLI):  # parse and validate, do not build a GPU trainer (nor check this machine's devices)
        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

    with argv_as(args):
        ParseOnly(MatchingModule, PrecompDataModule, run=False)


def test_an_encoder_size_set_beside_model_embed_dim_is_refused(tmp_path):
    from kgitm.cli.lightning import ConfigError, check_config_args

    with pytest.raises(ConfigError, match="linked from model.embed_dim; pass --model.embed_dim"):
        check_config_args(["--config", str(BASE), "--model.image_encoder.init_args.embed_dim", "64"])
    old = tmp_path / "old_size.yaml"
    old.write_text("model:\n  image_encoder:\n    init_args:\n      embed_dim: 256\n")
    with pytest.raises(ConfigError, match="old_size.yaml: sets model.image_encoder.init_args.embed_dim"):
        check_config_args(["--config", str(BASE), "--config", str(old)])
