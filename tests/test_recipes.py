"""The Flickr30K and MS-COCO recipes (``configs/experiment/*_{f30k,coco}.yaml``) instantiate through the real
CLI and train.

Each recipe is parsed by the LightningCLI (a misspelled or unknown key is a parser error), its recipe values
are checked to reach the objects built from it, and it trains two optimiser steps plus one validation pass
through ``Trainer.fit`` on a folder shaped like the SCAN release: 36 x 2048 float32 region features, five
captions of 8-16 words per image (Flickr8k captions from ``../shared/data`` when present, generated sentences
otherwise), splits ``train/dev/test`` (``testall`` for COCO). The GSMN and SGM recipes get what their headers
tell a user to add, made by the documented commands: GSMN-style pickled image sizes converted with
``kgitm convert-gsmn-sizes``, Neural-Motifs-style scene graphs, and ``kgitm preprocess``.

Only the run size is overridden here (batch 4, two steps, the CPU, one thread); the recipes' model sizes
(1024-d joint space, 300-d words), loggers and checkpoint callback are kept (the checkpoints, ~100 MB each, are
deleted after the check). Nothing here says how well a recipe trains: that needs the real data sets and
a GPU (docs/recipes.md).
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "configs" / "experiment"
RECIPES = sorted([*EXPERIMENTS.glob("*_f30k.yaml"), *EXPERIMENTS.glob("*_coco.yaml")])
METHODS = ("vsepp", "vse_infty", "scan_t2i", "scan_i2t", "gsmn_dense", "gsmn_sparse", "sgm", "sgraf_saf", "sgraf_sgr", "cora")
DATA_SETS = {"f30k": ("train", "dev", "test"), "coco": ("train", "dev", "testall")}
IMAGES = {"train": 12, "dev": 4, "test": 4, "testall": 4}
REGIONS, FEATURE_DIM, CAPTIONS_PER_IMAGE = 36, 2048, 5
#: run size only: batch, steps, no workers, the CPU (the recipes are meant for a GPU)
RUN = [
    "--data.batch_size", "4", "--data.num_workers", "0",
    "--trainer.accelerator", "cpu", "--trainer.max_steps", "2", "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for these steps: on a busy 2-core machine two spinning OpenMP threads made a
    1024-d GRU step 5-8x slower; restored afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _data_set(recipe: Path) -> str:
    return recipe.stem.rsplit("_", 1)[1]


def _data_values(recipe_cfg: dict, recipe: Path) -> dict:
    """The recipe's data values: the named data file's, or the inline block."""
    data = recipe_cfg["data"]
    if isinstance(data, str):
        return yaml.safe_load((recipe.parent / data).read_text())
    return data


# ------------------------------------------------------------------ captions and a SCAN-layout folder
def _captions(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` captions of 8-16 words: Flickr8k's (real) when ``../shared/data`` has them, else generated."""
    from conftest import shared_data_dir

    token_file = shared_data_dir() / "flickr8k" / "Flickr8k.token.txt"
    if token_file.exists():
        lines = token_file.read_text(encoding="utf-8").splitlines()
        caps = [line.split("\t", 1)[1].strip() for line in lines if "\t" in line]
        caps = [c for c in caps if 8 <= sum(w.isalpha() for w in c.split()) <= 16]
        if len(caps) >= n:
            start = int(rng.integers(0, len(caps) - n + 1))  # each split its own run of captions
            return caps[start : start + n]
    subjects = ["a man", "a young woman", "two dogs", "a little girl", "an old man", "a boy", "three people"]
    clothes = ["in a red shirt", "with a blue hat", "in a black jacket", "wearing white shorts"]
    verbs = ["is riding", "is sitting on", "stands next to", "is holding", "plays with", "walks behind"]
    objects = ["a brown horse", "a wooden bench", "a yellow ball", "a small boat", "a large tree", "a bicycle"]
    places = ["on the beach", "in a park", "near the river", "on the street", "in the snow"]
    out = []
    for _ in range(n):
        parts = [rng.choice(subjects), rng.choice(clothes), rng.choice(verbs), rng.choice(objects), rng.choice(places)]
        out.append(" ".join(parts) + " .")
    assert all(8 <= len(c.split()) - 1 <= 16 for c in out)
    return out


def _write_release(root: Path, splits: tuple[str, ...], rng: np.random.Generator) -> None:
    """What the SCAN release has: features and captions (plus image ids), nothing else."""
    root.mkdir(parents=True)
    for split in splits:
        n = IMAGES[split]
        feats = np.maximum(rng.normal(0.0, 1.0, (n, REGIONS, FEATURE_DIM)), 0).astype(np.float32)  # post-ReLU, like BUTD
        np.save(root / f"{split}_ims.npy", feats)
        (root / f"{split}_caps.txt").write_text("\n".join(_captions(CAPTIONS_PER_IMAGE * n, rng)) + "\n", encoding="utf-8")
        (root / f"{split}_ids.txt").write_text("\n".join(f"{split}_{i}.jpg" for i in range(n)) + "\n")


def _add_boxes_and_scene_graphs(root: Path, splits: tuple[str, ...], rng: np.random.Generator) -> None:
    """What a user adds for GSMN and SGM (docs/recipes.md): boxes, GSMN's pickled sizes converted with
    ``kgitm convert-gsmn-sizes``, and Neural-Motifs-style scene graphs over the regions."""
    from kgitm.cli import convert_gsmn_sizes

    labels = ["man", "woman", "dog", "horse", "bench", "ball", "tree", "boat", "shirt", "hat"]
    predicates = ["on", "riding", "holding", "near", "wearing", "behind"]
    for split in splits:
        n = IMAGES[split]
        size = np.stack([rng.integers(320, 640, n), rng.integers(240, 480, n)], 1).astype(np.float64)
        x1 = rng.uniform(0, 0.6, (n, REGIONS)) * size[:, :1]
        y1 = rng.uniform(0, 0.6, (n, REGIONS)) * size[:, 1:]
        x2 = x1 + rng.uniform(0.1, 0.4, (n, REGIONS)) * size[:, :1]
        y2 = y1 + rng.uniform(0.1, 0.4, (n, REGIONS)) * size[:, 1:]
        boxes = np.stack([x1, y1, x2, y2], -1).astype(np.float32)
        np.save(root / f"{split}_ims_bbx.npy", boxes)
        gsmn_sizes = np.array([{"image_w": float(w), "image_h": float(h)} for w, h in size], dtype=object)
        sizes_file = root / f"{split}_ims_size.npy"
        np.save(sizes_file, gsmn_sizes, allow_pickle=True)  # GSMN's release format: a pickled object array
        assert convert_gsmn_sizes.main([str(sizes_file), "--out", str(sizes_file), "--allow-pickle"]) == 0
        entries = []
        for i in range(n):
            objs = sorted(rng.choice(REGIONS, size=6, replace=False).tolist())
            pairs = [[int(a), int(b)] for a, b in rng.choice(len(objs), size=(4, 2)) if a != b]
            entries.append({
                "image_id": f"{split}_{i}.jpg",
                "boxes": boxes[i, objs].tolist(),
                "labels": [str(rng.choice(labels)) for _ in objs],
                "region_index": objs,
                "rel_pairs": pairs,
                "predicates": [str(rng.choice(predicates)) for _ in pairs],
                "rel_scores": sorted(rng.uniform(0.1, 1.0, len(pairs)).tolist(), reverse=True),
            })
        (root / f"{split}_scene_graphs.json").write_text(json.dumps(entries))  # read with --visual-format motifs


@pytest.fixture(scope="module")
def precomp(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Per data set: ``release`` (the SCAN layout only), ``full`` (plus boxes, sizes, scene graphs) and
    ``graphs`` (the stores ``kgitm preprocess`` writes for ``full``, as the recipes' headers say)."""
    from kgitm.cli import preprocess

    out: dict[str, dict[str, Path]] = {}
    for i, (ds, splits) in enumerate(DATA_SETS.items()):
        base = tmp_path_factory.mktemp(ds)
        release, full, graphs = base / f"{ds}_precomp", base / f"{ds}_precomp_full", base / "graphs"
        _write_release(release, splits, np.random.default_rng(i))
        _write_release(full, splits, np.random.default_rng(i))
        _add_boxes_and_scene_graphs(full, splits, np.random.default_rng(10 + i))
        assert preprocess.main(["--data-root", str(full), "--splits", *splits, "--out", str(graphs), "--visual-format", "motifs", "--progress", "false"]) == 0
        out[ds] = {"release": release, "full": full, "graphs": graphs}
    return out


def _cli(args: list[str]):
    from kgitm.cli.lightning import build_cli

    return build_cli(args, run=False)


def _args(recipe: Path, folders: dict[str, Path]) -> list[str]:
    data = _data_values(yaml.safe_load(recipe.read_text()), recipe)
    extra = folders["full"] if data.get("require_boxes") else folders["release"]
    args = ["--config", str(recipe), "--data.root", str(extra), *RUN]
    if data.get("graph_store"):
        args += ["--data.graph_store", str(folders["graphs"])]
    return args


# ------------------------------------------------------------------ the tests
def test_every_matcher_has_both_recipes():
    names = {p.stem for p in RECIPES}
    assert names == {f"{m}_{ds}" for m in METHODS for ds in DATA_SETS}, sorted(names)


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_instantiates_and_trains(recipe: Path, precomp, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipes' run folders (runs/<name>) go here
    cfg = yaml.safe_load(recipe.read_text())
    ds = _data_set(recipe)
    cli = _cli(_args(recipe, precomp[ds]))
    task, dm = cli.model, cli.datamodule

    # the recipe's values reach what was built (the run-size overrides aside)
    model = cfg["model"]
    data = _data_values(cfg, recipe)
    assert dm.hparams.test_split == DATA_SETS[ds][2] and dm.hparams.val_split == "dev"
    assert list(dm.hparams.test_protocols) == data["test_protocols"] and dm.hparams.diagnostics is False
    assert dm.hparams.min_word_count == data["min_word_count"] and dm.hparams.val_max_images == data["val_max_images"]
    assert dm.hparams.require_boxes == data["require_boxes"]
    assert task.hparams.embed_dim == model["embed_dim"] == 1024
    text_args = model["text_encoder"]["init_args"]
    assert task.text_encoder.word_dim == text_args["word_dim"] == 300
    assert task.text_encoder.bidirectional == text_args["bidirectional"]
    parsed = cli.config["model"]["matcher"]["init_args"]
    for key, value in model["matcher"]["init_args"].items():  # parsed as written, and kept by the matcher where it stores it
        for got in (parsed[key], getattr(task.matcher, key, value)):
            assert (got == value) if not isinstance(value, float) else math.isclose(got, value), (key, got, value)
    image_args = model["image_encoder"].get("init_args", {})
    for key, value in image_args.items():  # the image encoder's values (VSE-infinity's MLP branch among them)
        if key in ("normalize_input", "normalize", "residual_mlp"):
            assert getattr(task.image_encoder, key) == value, (key, value)
    if image_args.get("residual_mlp"):
        assert task.image_encoder.mlp.layers[0].out_features == image_args.get("mlp_hidden_dim", model["embed_dim"] // 2)
        assert len(task.image_encoder.mlp.layers) == image_args["mlp_layers"]
    if parsed.get("pooling") == "gpo":  # one GPO per modality, with the recipe's sizes and temperature
        for pool in (task.matcher.image_pool, task.matcher.caption_pool):
            assert (pool.pe_dim, pool.hidden_dim) == (parsed["gpo_pe_dim"], parsed["gpo_hidden_dim"])
            assert math.isclose(pool.temperature, parsed["gpo_temperature"])
    if "normalize" in text_args:
        assert task.text_encoder.normalize == text_args["normalize"]
    hinge = task.term("retrieval")
    loss_args = model["loss"][0]["init_args"]
    assert math.isclose(hinge.margin, loss_args["margin"]) and hinge.hinge.max_violation == loss_args["max_violation"]
    assert hinge.hinge.reduction == loss_args["reduction"] and hinge.warmup_epochs == loss_args["warmup_epochs"]
    trainer_cfg = cfg["trainer"]
    assert cli.trainer.max_epochs == trainer_cfg["max_epochs"]
    assert cli.trainer.gradient_clip_val == trainer_cfg["gradient_clip_val"]
    optimizers = task.configure_optimizers()
    opt, sched = optimizers["optimizer"], optimizers["lr_scheduler"]
    assert type(opt).__name__ == model["optimizer"]["class_path"].rsplit(".", 1)[1]
    for key, value in model["optimizer"]["init_args"].items():
        assert math.isclose(opt.param_groups[0][key], value), (key, opt.param_groups[0][key], value)
    sched_args = model["lr_scheduler"]["init_args"]
    if "milestones" in sched_args:  # MultiStepLR (CORA: one decay, at epoch 15 of 55)
        assert (sorted(sched.milestones), sched.gamma) == (sched_args["milestones"], sched_args["gamma"])
    else:
        assert (sched.step_size, sched.gamma) == (sched_args["step_size"], sched_args["gamma"])

    # two optimiser steps and one validation pass through the real Trainer
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        cli.trainer.fit(task, datamodule=dm)
    assert cli.trainer.global_step == 2
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]), metrics
    assert torch.isfinite(metrics["val/rsum"]), metrics
    run_dir = tmp_path / "runs" / recipe.stem / "seed0"  # the run folder: runs/<experiment>/seed<seed>
    assert cli.run_dir == Path("runs") / recipe.stem / "seed0"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert checkpoints == ["best.ckpt", "last.ckpt"], checkpoints
    shutil.rmtree(run_dir)  # ~100 MB per recipe (1024-d model + Adam state); pytest keeps old temp folders


@pytest.mark.parametrize("recipe", [p for p in RECIPES if "data:" in p.read_text() and isinstance(yaml.safe_load(p.read_text())["data"], dict)],
                         ids=lambda p: p.stem)
def test_inline_data_blocks_repeat_the_data_config(recipe: Path):
    """GSMN and SGM recipes write the data block out (a config file cannot name a data file and change
    it); every value they share with configs/data/<set>_precomp.yaml must be the same."""
    block = yaml.safe_load(recipe.read_text())["data"]
    base = yaml.safe_load((REPO / "configs" / "data" / f"{_data_set(recipe)}_precomp.yaml").read_text())
    changed = {"batch_size", "require_boxes"}  # the methods' own values, cited in the recipe
    assert set(base) <= set(block), set(base) - set(block)
    assert {k: block[k] for k in base if k not in changed} == {k: v for k, v in base.items() if k not in changed}


def _parse_only(args: list[str]) -> None:
    """Parse and validate ``args`` with the real CLI parser, building nothing (as tests/test_configs.py)."""
    from kgitm.cli.lightning import KgitmCLI, MatchingModule, PrecompDataModule, argv_as, check_config_args

    class ParseOnly(KgitmCLI):
        def instantiate_classes(self) -> None:
            pass

    check_config_args(args)
    with argv_as(args):
        ParseOnly(MatchingModule, PrecompDataModule, run=False)


def test_a_misspelled_recipe_value_is_refused(tmp_path, capsys):
    """A recipe value under a wrong name is a parser error, not a silently ignored setting."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f30k_precomp.yaml").write_text((REPO / "configs" / "data" / "f30k_precomp.yaml").read_text())
    good = tmp_path / "experiment" / "good.yaml"
    good.write_text((EXPERIMENTS / "scan_t2i_f30k.yaml").read_text())
    _parse_only(["--config", str(good), *RUN])  # the copy itself parses
    bad = tmp_path / "experiment" / "bad.yaml"
    bad.write_text(good.read_text().replace("lambda_softmax:", "lambda_sofmax:", 1))
    with pytest.raises(SystemExit):
        _parse_only(["--config", str(bad), *RUN])
    assert "lambda_sofmax" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["gsmn_dense_f30k", "sgm_coco"])
def test_missing_boxes_stop_with_the_one_line_data_error(name: str, precomp):
    """The SCAN release has no boxes: a box-reading recipe pointed at it stops before any work, with the
    data reader's one-line message naming the missing file."""
    from kgitm.core.io import DataFormatError

    recipe = EXPERIMENTS / f"{name}.yaml"
    folders = precomp[_data_set(recipe)]
    args = ["--config", str(recipe), "--data.root", str(folders["release"]), *RUN]
    if "graph_store" in recipe.read_text():
        args += ["--data.graph_store", str(folders["graphs"])]
    with pytest.raises(DataFormatError) as err:
        _cli(args)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{folders['release'] / 'train_ims_bbx.npy'}: missing; this model needs boxes")
