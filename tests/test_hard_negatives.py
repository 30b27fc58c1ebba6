"""Relation-swap hard negatives: the swap itself, the batch, the loss term, and a fit through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgitm.pipeline.hard_negatives import relation_swap
from kgitm.graphs.types import SceneGraph, SGObject

REPO = Path(__file__).resolve().parents[1]


def _graph(spans: list[tuple[int, int]], relations: list[tuple[int, str, int]]) -> SceneGraph:
    return SceneGraph(objects=[SGObject(f"o{i}", span) for i, span in enumerate(spans)], relations=relations)


def test_swaps_subject_and_object_heads_in_place():
    tokens = "a man to the left of a dog".split()
    graph = _graph([(1, 2), (7, 8)], [(0, "to left of", 1)])
    assert relation_swap(tokens, graph) == "a dog to the left of a man".split()
    assert tokens == "a man to the left of a dog".split()  # input untouched


def test_symmetric_identical_unequal_and_missing_relations_give_no_swap():
    tokens = "a man next to a dog".split()
    assert relation_swap(tokens, _graph([(1, 2), (5, 6)], [(0, "next to", 1)])) is None  # symmetric
    assert relation_swap(tokens, _graph([(1, 2), (5, 6)], [(0, "next to", 1)]), symmetric=()) is not None
    same = "a dog behind a dog".split()
    assert relation_swap(same, _graph([(1, 2), (4, 5)], [(0, "behind", 1)])) is None  # identical heads
    longer = "a tennis racket behind a dog".split()
    assert relation_swap(longer, _graph([(1, 3), (5, 6)], [(0, "behind", 1)])) is None  # unequal spans
    assert relation_swap(tokens, _graph([(1, 2)], [])) is None and relation_swap(tokens, None) is None
    assert relation_swap(tokens, _graph([(1, 2), (5, 9)], [(0, "behind", 1)])) is None  # span past the end


def test_choice_picks_among_the_swappable_relations():
    tokens = "a cat on a mat and a dog behind a tree".split()
    graph = _graph([(1, 2), (4, 5), (7, 8), (10, 11)], [(0, "on", 1), (2, "behind", 3)])
    first, second = relation_swap(tokens, graph, choice=0), relation_swap(tokens, graph, choice=1)
    assert first == "a mat on a cat and a dog behind a tree".split()
    assert second == "a cat on a mat and a tree behind a dog".split()
    assert relation_swap(tokens, graph, choice=2) == first
    assert relation_swap(tokens, graph, only=["behind"], choice=0) == second  # allow-list
    assert relation_swap(tokens, graph, only=["under"]) is None


def _module(weight: float, matcher=None, rotated: float = 0.0):
    from kgitm.encoders.image import RegionEncoder
    from kgitm.encoders.text import BiGRUTextEncoder
    from kgitm.lit.module import MatchingModule
    from kgitm.matchers.global_embedding import GlobalEmbeddingMatcher
    from kgitm.models.losses import RelationSwapHinge, RetrievalHinge, RotatedImageHinge

    torch.manual_seed(0)
    terms = [RetrievalHinge()]
    if weight > 0:
        terms.append(RelationSwapHinge(weight, pairs=2, reduction="mean"))
    if rotated > 0:
        terms.append(RotatedImageHinge(rotated, pairs=2, reduction="mean"))
    return MatchingModule(
        RegionEncoder(feature_dim=8, embed_dim=16),
        BiGRUTextEncoder(vocab_size=20, word_dim=8, embed_dim=16),
        matcher if matcher is not None else GlobalEmbeddingMatcher(),
        loss=terms,
        embed_dim=16,
    )


def test_rotate_boxes_reverses_every_direction():
    from kgitm.core.geometry import polar_pseudo_coordinates, rotate_boxes

    x, y = torch.rand(2, 5, 2).sort(-1).values, torch.rand(2, 5, 2).sort(-1).values
    boxes = torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)
    rot = rotate_boxes(boxes)
    assert ((rot[..., 2] >= rot[..., 0]) & (rot[..., 3] >= rot[..., 1])).all()  # still corners
    torch.testing.assert_close(rotate_boxes(rot), boxes)
    a, b = polar_pseudo_coordinates(boxes), polar_pseudo_coordinates(rot)
    torch.testing.assert_close(b[..., 0], a[..., 0])  # same distances
    turn = torch.remainder(b[..., 1] - a[..., 1], 2.0)  # angles move by pi (1 in units of pi)
    off_diagonal = ~torch.eye(5, dtype=torch.bool).expand(2, 5, 5)
    torch.testing.assert_close(turn[off_diagonal], torch.ones_like(turn[off_diagonal]))


def test_rotated_image_term_is_the_hinge_against_the_rotated_boxes():
    from kgitm.core.geometry import rotate_boxes
    from kgitm.core.types import EncodedImages
    from kgitm.matchers.gsmn import GSMNMatcher

    module = _module(0.0, GSMNMatcher("dense", num_blocks=4, num_kernels=4, structure_dim=8, mlp_dim=8), rotated=1.0)
    g = torch.Generator().manual_seed(2)
    corners = torch.rand(3, 4, 2, 2, generator=g).sort(-2).values  # (x1 <= x2, y1 <= y2)
    batch = _batch(boxes=corners.transpose(-1, -2).flatten(-2))
    out = module.model(batch)
    assert out.images.boxes is not None
    got = module.term("rotated_image")(module.model, batch, out, epoch=0)
    rows = [1, 2]
    rotated = EncodedImages(out.images.features, out.images.mask, rotate_boxes(out.images.boxes))
    s_rot = module.model.score(rotated, out.captions)
    want = sum(max(0.0, 0.2 - float(out.sims[r, r]) + float(s_rot[r, r])) for r in rows) / len(rows)
    assert got.item() == pytest.approx(want, abs=1e-6)
    assert float(s_rot[1, 1]) != pytest.approx(float(out.sims[1, 1]), abs=1e-7)  # GSMN sees the boxes
    module.training_step(batch, 0).backward()
    assert module.matcher.kernel_mean.grad is not None and module.matcher.kernel_mean.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="RotatedImageHinge needs .* data.relation_swap_negatives true"):
        module.training_step(_batch(with_swaps=False, boxes=batch.images.boxes), 0)
    from kgitm.models.losses import RotatedImageHinge

    with pytest.raises(ValueError, match="weight must be >= 0"):
        RotatedImageHinge(-1.0)


def _batch(with_swaps: bool = True, boxes=None):
    from kgitm.core.batch import Batch, CaptionInputs, ImageInputs

    g = torch.Generator().manual_seed(1)
    token_ids = torch.randint(2, 20, (3, 5), generator=g)
    words = [["w"] * 5 for _ in range(3)]
    captions = CaptionInputs(token_ids, torch.ones(3, 5, dtype=torch.bool), torch.full((3,), 5), words)
    batch = Batch(
        images=ImageInputs(torch.randn(3, 4, 8, generator=g), torch.ones(3, 4, dtype=torch.bool), boxes=boxes),
        captions=captions, image_index=torch.arange(3), caption_index=torch.arange(3),
    )
    if with_swaps:
        swap = token_ids.clone()
        swap[:, [0, 3]] = swap[:, [3, 0]]
        batch.swapped = CaptionInputs(swap, captions.word_mask, captions.lengths, words)
        batch.swap_valid = torch.tensor([False, True, True])
    return batch


def test_loss_term_equals_the_hinge_on_the_swapped_pairs_and_trains_the_encoders():
    module = _module(1.0)
    batch = _batch()
    out = module.model(batch)
    got = module.term("relation_swap")(module.model, batch, out, epoch=0)
    rows = [1, 2]  # captions with a swap (at most `pairs` of them)
    s_swap = module.model.score(out.images, module.model.encode_captions(batch.swapped))
    want = sum(max(0.0, 0.2 - float(out.sims[r, r]) + float(s_swap[r, r])) for r in rows) / len(rows)
    assert got.item() == pytest.approx(want, abs=1e-6)
    module.training_step(batch, 0).backward()
    assert module.text_encoder.embed.weight.grad is not None


def test_loss_term_without_swapped_captions_is_a_clear_error():
    module = _module(1.0)
    with pytest.raises(ValueError, match="relation_swap_negatives"):
        module.training_step(_batch(with_swaps=False), 0)
    assert torch.isfinite(_module(0.0).training_step(_batch(with_swaps=False), 0))  # off: not needed


def test_sum_reduction_weighs_each_pair_like_a_caption():
    from kgitm.models.losses import RelationSwapHinge

    module = _module(1.0)
    batch = _batch()
    out = module.model(batch)
    mean = module.term("relation_swap")(module.model, batch, out, epoch=0)
    total = RelationSwapHinge(pairs=2, reduction="sum")(module.model, batch, out, epoch=0)
    assert total.item() == pytest.approx(2 * mean.item(), abs=1e-6)


def test_bad_relation_swap_settings_are_refused():
    from kgitm.models.losses import RelationSwapHinge

    with pytest.raises(ValueError, match="pairs must be >= 1"):
        RelationSwapHinge(1.0, pairs=0)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        RelationSwapHinge(-1.0)


@pytest.mark.slow
def test_fit_with_relation_swap_negatives_through_the_cli(tiny_synthscenes, tmp_path, monkeypatch):
    """Parse tiny SynthScenes into a graph store, check the batches carry real swaps, and fit."""
    from kgitm.cli import preprocess
    from kgitm.cli.lightning import run_lightning_cli
    from kgitm.lit.datamodule import PrecompDataModule

    graphs = tmp_path / "graphs"
    assert preprocess.main(["--data-root", str(tiny_synthscenes), "--splits", "train", "dev", "test",
                            "--out", str(graphs), "--progress", "false"]) == 0
    dm = PrecompDataModule(str(tiny_synthscenes), graph_store=str(graphs), relation_swap_negatives=True, batch_size=64)
    batch = next(iter(dm.train_dataloader()))
    valid = batch.swap_valid
    assert valid.float().mean() > 0.3  # most SynthScenes captions have an asymmetric relation
    for b in valid.nonzero().flatten().tolist():
        words, swapped = batch.captions.words[b], batch.swapped.words[b]
        assert sorted(words) == sorted(swapped) and words != swapped  # same words, other order
        changed = [i for i, (w, s) in enumerate(zip(words, swapped)) if w != s]
        assert len(changed) >= 2 and torch.equal(batch.swapped.token_ids[b, changed[0]], batch.captions.token_ids[b, changed[-1]])
    assert next(iter(dm.val_dataloader())).swapped is None  # training captions only

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    trainer = tmp_path / "trainer.yaml"
    trainer.write_text(f"accelerator: cpu\ndevices: 1\nlogger: false\nenable_progress_bar: false\ncallbacks: []\ndefault_root_dir: {out}\n")
    cli = run_lightning_cli([
        "fit", "--config", str(REPO / "configs/experiment/gsmn_sparse_synthscenes.yaml"), "--trainer", str(trainer),
        "--data.root", str(tiny_synthscenes), "--data.graph_store", str(graphs), "--data.batch_size", "16",
        "--data.relation_swap_negatives", "true", f"--model.loss+={REPO / 'configs/loss/relation_swap.yaml'}",
        "--model.embed_dim", "32", "--model.text_encoder.init_args.word_dim", "16",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
    ])
    logged = cli.trainer.callback_metrics
    assert "train/relation_swap_loss" in logged and torch.isfinite(logged["train/relation_swap_loss"])


@pytest.mark.slow
def test_probe_relation_geometry_script_end_to_end(tiny_synthscenes, tmp_path, monkeypatch, capsys):
    """Fit a tiny GSMN with rotated-image negatives through the CLI, then run the geometry probe on
    its run folder, with a short --fit-rotation."""
    import importlib.util
    import json

    from kgitm.cli import preprocess
    from kgitm.cli.lightning import run_lightning_cli

    graphs = tmp_path / "graphs"
    assert preprocess.main(["--data-root", str(tiny_synthscenes), "--splits", "train", "dev", "test",
                            "diagnostics/test_relation_swap_positive", "diagnostics/test_relation_swap_negative",
                            "--out", str(graphs), "--progress", "false"]) == 0
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    trainer = tmp_path / "trainer.yaml"
    trainer.write_text(
        f"accelerator: cpu\ndevices: 1\nlogger: false\nenable_progress_bar: false\ndefault_root_dir: {run}\n"
        "callbacks:\n  - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"    init_args: {{dirpath: {run / 'checkpoints'}, filename: best}}\n"
    )
    size = ["--model.embed_dim", "32", "--model.text_encoder.init_args.word_dim", "16"]
    cli = run_lightning_cli([
        "fit", "--config", str(REPO / "configs/experiment/gsmn_sparse_synthscenes.yaml"), "--trainer", str(trainer),
        "--data.root", str(tiny_synthscenes), "--data.graph_store", str(graphs), "--data.batch_size", "16",
        "--data.relation_swap_negatives", "true", f"--model.loss+={REPO / 'configs/loss/rotated_image.yaml'}",
        "--model.matcher.init_args.kernel_style", "precision", "--model.matcher.init_args.kernel_precision_init", "[4.0, 4.0]", *size,
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
    ])
    logged = cli.trainer.callback_metrics
    assert "train/rotated_image_loss" in logged and torch.isfinite(logged["train/rotated_image_loss"])
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "best.ckpt").exists()

    spec = importlib.util.spec_from_file_location("probe", REPO / "scripts/probe_relation_geometry.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    out = tmp_path / "probe.json"
    capsys.readouterr()
    assert probe.main([str(run), "--fit-rotation", "3", "--log-every", "1", "--threads", "1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rotation effect" in printed and "after --fit-rotation" in printed
    res = json.loads(out.read_text())
    pairs = sum(1 for line in (tiny_synthscenes / "diagnostics/test_relation_swap.jsonl").read_text().splitlines() if line)
    for key in ("trained", "after_fit_rotation"):
        rows = res[key]
        assert rows["all"]["pairs"] == pairs == sum(r["pairs"] for name, r in rows.items() if name != "all")
        assert 0 <= rows["all"]["swap"] <= 100 and rows["all"]["rotated_ties"] == 0.0  # GSMN reads the boxes
        assert rows["all"]["rotation_effect"] > 0
    assert len(res["fit_rotation"]["curve"]) == 3
    # a missing checkpoint is a one-line error naming the file
    with pytest.raises(SystemExit, match="last.ckpt: no such checkpoint"):
        probe.main([str(run), "--checkpoint", "last"])


def test_swap_settings_without_swap_negatives_warn(tiny_synthscenes):
    import warnings

    from kgitm.lit.datamodule import PrecompDataModule

    with pytest.warns(UserWarning, match="data.relation_swap_negatives true to use them"):
        PrecompDataModule(str(tiny_synthscenes), swap_predicates=["behind"])
    with pytest.warns(UserWarning, match="no effect"):
        PrecompDataModule(str(tiny_synthscenes), symmetric_predicates=["near"])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*swap_predicates.*")
        PrecompDataModule(str(tiny_synthscenes))  # the defaults: silent
