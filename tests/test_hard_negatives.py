"""Relation-swap hard negatives: the swap itself, the batch, the loss term, and a fit through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgitm.data.hard_negatives import relation_swap
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


def _module(weight: float):
    from kgitm.encoders.image import RegionEncoder
    from kgitm.encoders.text import BiGRUTextEncoder
    from kgitm.lit.module import MatchingModule
    from kgitm.matchers.global_embedding import GlobalEmbeddingMatcher

    torch.manual_seed(0)
    return MatchingModule(
        RegionEncoder(feature_dim=8, embed_dim=16),
        BiGRUTextEncoder(vocab_size=20, word_dim=8, embed_dim=16),
        GlobalEmbeddingMatcher(),
        relation_swap_weight=weight,
        relation_swap_pairs=2,
    )


def _batch(with_swaps: bool = True) -> dict:
    g = torch.Generator().manual_seed(1)
    token_ids = torch.randint(2, 20, (3, 5), generator=g)
    batch = {
        "images": torch.randn(3, 4, 8, generator=g),
        "region_mask": torch.ones(3, 4, dtype=torch.bool),
        "token_ids": token_ids,
        "word_mask": torch.ones(3, 5, dtype=torch.bool),
        "lengths": torch.full((3,), 5),
        "words": [["w"] * 5 for _ in range(3)],
        "image_index": torch.arange(3),
        "caption_index": torch.arange(3),
    }
    if with_swaps:
        swap = token_ids.clone()
        swap[:, [0, 3]] = swap[:, [3, 0]]
        batch.update(swap_token_ids=swap, swap_words=batch["words"], swap_valid=torch.tensor([False, True, True]))
    return batch


def test_loss_term_equals_the_hinge_on_the_swapped_pairs_and_trains_the_encoders():
    module = _module(1.0)
    batch = _batch()
    images, captions = module.encode(batch)
    sims = module.scorer(images, captions)
    got = module.relation_swap_loss(batch, images, sims)
    rows = [1, 2]  # captions with a swap (at most relation_swap_pairs of them)
    swapped = dict(batch, token_ids=batch["swap_token_ids"])
    s_swap = module.scorer(images, module.encode_captions(swapped))
    want = sum(max(0.0, 0.2 - float(sims[r, r]) + float(s_swap[r, r])) for r in rows) / len(rows)
    assert got.item() == pytest.approx(want, abs=1e-6)
    module.training_step(batch, 0).backward()
    assert module.text_encoder.embed.weight.grad is not None


def test_loss_term_without_swapped_captions_is_a_clear_error():
    module = _module(1.0)
    with pytest.raises(ValueError, match="relation_swap_negatives"):
        module.training_step(_batch(with_swaps=False), 0)
    assert torch.isfinite(_module(0.0).training_step(_batch(with_swaps=False), 0))  # off: not needed


def test_bad_relation_swap_settings_are_refused():
    from kgitm.encoders.image import RegionEncoder
    from kgitm.encoders.text import BiGRUTextEncoder
    from kgitm.lit.module import MatchingModule
    from kgitm.matchers.global_embedding import GlobalEmbeddingMatcher

    parts = (RegionEncoder(feature_dim=8, embed_dim=16), BiGRUTextEncoder(vocab_size=20, word_dim=8, embed_dim=16),
             GlobalEmbeddingMatcher())
    with pytest.raises(ValueError, match="relation_swap_pairs >= 1"):
        MatchingModule(*parts, relation_swap_weight=1.0, relation_swap_pairs=0)
    with pytest.raises(ValueError, match="relation_swap_weight must be >= 0"):
        MatchingModule(*parts, relation_swap_weight=-1.0)


@pytest.mark.slow
def test_fit_with_relation_swap_negatives_through_the_cli(tiny_synthscenes, tmp_path, monkeypatch):
    """Parse tiny SynthScenes into a graph store, check the batches carry real swaps, and fit."""
    from kgitm.data.datamodule import PrecompDataModule
    from kgitm.graphs import preprocess
    from kgitm.lit.cli import run_lightning_cli

    graphs = tmp_path / "graphs"
    assert preprocess.main(["--data-root", str(tiny_synthscenes), "--splits", "train", "dev", "test",
                            "--out", str(graphs), "--progress", "false"]) == 0
    dm = PrecompDataModule(str(tiny_synthscenes), graph_store=str(graphs), relation_swap_negatives=True, batch_size=64)
    batch = next(iter(dm.train_dataloader()))
    valid = batch["swap_valid"]
    assert valid.float().mean() > 0.3  # most SynthScenes captions have an asymmetric relation
    for b in valid.nonzero().flatten().tolist():
        words, swapped = batch["words"][b], batch["swap_words"][b]
        assert sorted(words) == sorted(swapped) and words != swapped  # same words, other order
        changed = [i for i, (w, s) in enumerate(zip(words, swapped)) if w != s]
        assert len(changed) >= 2 and torch.equal(batch["swap_token_ids"][b, changed[0]], batch["token_ids"][b, changed[-1]])
    assert "swap_token_ids" not in next(iter(dm.val_dataloader()))  # training captions only

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    trainer = tmp_path / "trainer.yaml"
    trainer.write_text(f"accelerator: cpu\ndevices: 1\nlogger: false\nenable_progress_bar: false\ncallbacks: []\ndefault_root_dir: {out}\n")
    cli = run_lightning_cli([
        "fit", "--config", str(REPO / "configs/experiment/gsmn_sparse_synthscenes.yaml"), "--trainer", str(trainer),
        "--data.root", str(tiny_synthscenes), "--data.graph_store", str(graphs), "--data.batch_size", "16",
        "--data.relation_swap_negatives", "true", "--model.relation_swap_weight", "1.0",
        "--model.image_encoder.init_args.embed_dim", "32", "--model.text_encoder.init_args.embed_dim", "32",
        "--model.text_encoder.init_args.word_dim", "16",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
    ])
    logged = cli.trainer.callback_metrics
    assert "train/relation_swap_loss" in logged and torch.isfinite(logged["train/relation_swap_loss"])
