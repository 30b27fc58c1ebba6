"""Two-stage retrieval (coarse shortlist + expensive re-ranking): exactness and pair accounting."""

from __future__ import annotations

import pytest
import torch

from kgitm.eval.metrics import evaluate_retrieval
from kgitm.eval.two_stage import top_k_mask, two_stage_metrics, two_stage_similarity


class CountingRerank:
    """Looks scores up in a fixed expensive matrix and records every call."""

    def __init__(self, expensive: torch.Tensor) -> None:
        self.expensive = expensive
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, image_idx: torch.Tensor, caption_idx: torch.Tensor) -> torch.Tensor:
        self.calls.append((image_idx, caption_idx))
        return self.expensive[image_idx][:, caption_idx]


def _random(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    truth = torch.zeros(n, k * n)
    truth[torch.arange(n * k) // k, torch.arange(n * k)] = 1.0
    coarse = truth + 0.9 * torch.randn(n, k * n, generator=g)
    expensive = truth + 0.5 * torch.randn(n, k * n, generator=g)
    return coarse, expensive


@pytest.mark.parametrize("image_block", [1, 3, 100])
def test_full_shortlists_equal_exhaustive(image_block):
    coarse, expensive = _random(7, 5, seed=0)
    rerank = CountingRerank(expensive)
    got = two_stage_metrics(coarse, rerank, k_images=7, k_captions=35, image_block=image_block)
    want = evaluate_retrieval(expensive.numpy(), 5)
    for key, value in want.items():
        assert got[key] == value, key
    assert got["matcher_pairs"] == got["exhaustive_pairs"] == 7 * 35
    assert got["scored_pairs"] == 7 * 35
    assert len(rerank.calls) == -(-7 // image_block)  # one call per image block


def test_shortlist_miss_is_ranked_after_candidates():
    # 2 images, 1 caption each. The coarse model prefers the wrong caption for image 0 and the wrong
    # image for caption 1; the expensive model is right everywhere.
    coarse = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    expensive = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # k = 1: image 0's shortlist is caption 1 (ground truth missed), image 1's is caption 0 (missed).
    res = two_stage_metrics(
        coarse, CountingRerank(expensive), k_images=1, k_captions=1, captions_per_image=1, share_candidates=False
    )
    assert res["i2t_r1"] == 0.0 and res["i2t_medr"] == 2.0
    assert res["t2i_r1"] == 0.0
    # k = 2 covers everything: the expensive model's perfect ranking
    res = two_stage_metrics(coarse, CountingRerank(expensive), k_images=2, k_captions=2, captions_per_image=1)
    assert res["i2t_r1"] == res["t2i_r1"] == 100.0


def test_candidates_ordered_by_expensive_rest_by_coarse():
    # 1 image-to-text query over 6 captions (3 images x 2 captions, image 0's captions are 0 and 1).
    coarse = torch.tensor(
        [[0.5, 0.0, 0.9, 0.8, 0.7, 0.6], [0.0] * 6, [0.0] * 6]
    )
    expensive = torch.tensor([[5.0, 9.0, -3.0, 4.0, 2.0, 8.0], [0.0] * 6, [0.0] * 6])
    res = two_stage_similarity(coarse, CountingRerank(expensive), k_images=1, k_captions=3, share_candidates=False)
    row = res.i2t[0]
    # shortlist {2, 3, 4} re-ranked by the expensive score: 3 (4.0) > 4 (2.0) > 2 (-3.0); then the
    # rest by the coarse score: 5 (0.6) > 0 (0.5) > 1 (0.0), although caption 1 scores 9 expensively
    order = torch.sort(row, descending=True, stable=True).indices.tolist()
    assert order == [3, 4, 2, 5, 0, 1]
    metrics = two_stage_metrics(
        coarse, CountingRerank(expensive), k_images=1, k_captions=3, captions_per_image=2, share_candidates=False
    )
    assert metrics["i2t_r1"] == 0.0  # image 0's best ground truth (caption 0) ranks 5th
    # shared candidates: image 0 is every caption's coarse best image (k_images=1), so all six pairs
    # of its row were scored and its ranking is the expensive one: caption 1 (9.0) first
    shared = two_stage_similarity(coarse, CountingRerank(expensive), k_images=1, k_captions=3)
    assert torch.sort(shared.i2t[0], descending=True, stable=True).indices.tolist() == [1, 5, 0, 3, 4, 2]


def test_shared_candidates_fix_a_hub_miss():
    # caption 1 belongs to image 1, but the coarse model puts hub image 0 first for every caption;
    # image 1's own shortlist (k_captions=1) holds caption 1, so sharing rescues the t2i query.
    coarse = torch.tensor([[0.9, 0.9], [0.1, 0.5]])
    expensive = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    alone = two_stage_metrics(
        coarse, CountingRerank(expensive), k_images=1, k_captions=1, captions_per_image=1, share_candidates=False
    )
    shared = two_stage_metrics(coarse, CountingRerank(expensive), k_images=1, k_captions=1, captions_per_image=1)
    assert alone["t2i_r1"] == 50.0 and shared["t2i_r1"] == 100.0
    assert alone["matcher_pairs"] == shared["matcher_pairs"] == 3


def test_pair_count_is_union_of_both_shortlists():
    coarse, expensive = _random(6, 5, seed=1)
    k_img, k_cap = 2, 4
    rerank = CountingRerank(expensive)
    res = two_stage_similarity(coarse, rerank, k_images=k_img, k_captions=k_cap)
    i2t = top_k_mask(coarse, k_cap, dim=1)
    t2i = top_k_mask(coarse, k_img, dim=0)
    assert i2t.sum() == 6 * k_cap and t2i.sum() == 30 * k_img
    union = int((i2t | t2i).sum())
    assert res.matcher_pairs == res.scored_pairs == union
    # every pair scored exactly once, image by image
    scored = [(int(i), int(c)) for img, caps in rerank.calls for i in img for c in caps]
    assert len(scored) == len(set(scored)) == union
    # larger blocks: fewer calls, same metrics, more scored pairs
    a = two_stage_metrics(coarse, CountingRerank(expensive), k_images=k_img, k_captions=k_cap)
    b = two_stage_metrics(coarse, CountingRerank(expensive), k_images=k_img, k_captions=k_cap, image_block=4)
    assert {k: v for k, v in a.items() if k != "scored_pairs"} == {k: v for k, v in b.items() if k != "scored_pairs"}
    assert b["scored_pairs"] >= a["scored_pairs"]


def test_top_k_mask_breaks_ties_by_lower_index():
    coarse = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert top_k_mask(coarse, 2, dim=1).tolist() == [[True, True, False, False]]
    with pytest.raises(ValueError, match="positive int"):
        top_k_mask(coarse, 0, dim=1)


def test_coco1k_shortlists_stay_inside_folds():
    coarse, expensive = _random(6, 5, seed=2)
    got = two_stage_metrics(
        coarse, CountingRerank(expensive), k_images=3, k_captions=15, protocol="coco1k", fold_images=3
    )
    want = evaluate_retrieval(expensive.numpy(), 5, "coco1k", fold_images=3)
    assert got["rsum"] == pytest.approx(want["rsum"])
    assert got["exhaustive_pairs"] == got["matcher_pairs"] == 2 * 3 * 15


def test_bad_rerank_shape_is_reported():
    coarse, _ = _random(3, 5, seed=3)
    with pytest.raises(ValueError, match="rerank returned shape"):
        two_stage_similarity(coarse, lambda i, c: torch.zeros(len(i)), k_images=1, k_captions=2)
    with pytest.raises(ValueError, match="NaN"):
        two_stage_similarity(coarse, lambda i, c: torch.full((len(i), len(c)), float("nan")), k_images=1, k_captions=2)


def _naive_ranks(
    coarse: torch.Tensor, expensive: torch.Tensor, k_img: int, k_cap: int, k: int, share: bool
) -> tuple[list[int], list[int]]:
    """The two-stage ranking spelled out query by query (stable sorts, lower index first on ties)."""
    n, m = coarse.shape

    def top(values: list[float], size: int) -> set[int]:
        return set(sorted(range(len(values)), key=lambda j: -values[j])[:size])  # stable

    row_top = [top(coarse[i].tolist(), k_cap) for i in range(n)]  # captions per image
    col_top = [top(coarse[:, j].tolist(), k_img) for j in range(m)]  # images per caption

    def rank_of(gts: list[int], coarse_row: list[float], exp_row: list[float], shortlist: set[int]) -> int:
        order = sorted(range(len(coarse_row)), key=lambda j: -coarse_row[j])  # stable
        final = sorted([j for j in order if j in shortlist], key=lambda j: -exp_row[j])
        final += [j for j in order if j not in shortlist]
        return min(final.index(g) for g in gts)

    i2t, t2i = [], []
    for i in range(n):
        shortlist = row_top[i] | ({j for j in range(m) if i in col_top[j]} if share else set())
        i2t.append(rank_of(list(range(k * i, k * i + k)), coarse[i].tolist(), expensive[i].tolist(), shortlist))
    for j in range(m):
        shortlist = col_top[j] | ({i for i in range(n) if j in row_top[i]} if share else set())
        t2i.append(rank_of([j // k], coarse[:, j].tolist(), expensive[:, j].tolist(), shortlist))
    return i2t, t2i


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("k_img,k_cap", [(1, 1), (2, 7), (4, 3), (6, 30)])
def test_matches_naive_per_query_reranking(k_img, k_cap, share):
    from kgitm.eval.metrics import recall_metrics

    coarse, expensive = _random(6, 5, seed=4)
    i2t, t2i = _naive_ranks(coarse, expensive, k_img, k_cap, 5, share)
    got = two_stage_metrics(coarse, CountingRerank(expensive), k_images=k_img, k_captions=k_cap, share_candidates=share)
    want = recall_metrics(torch.tensor(i2t).numpy(), torch.tensor(t2i).numpy())
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key


@pytest.mark.slow
def test_bench_script_end_to_end(tiny_synthscenes, tmp_path, monkeypatch, capsys):
    """Train tiny VSE++ and SCAN t2i (1 epoch, 32-d) and run scripts/bench_two_stage.py on them."""
    import importlib.util
    import json
    from pathlib import Path

    from kgitm.cli import main

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    trainer = tmp_path / "trainer.yaml"
    trainer.write_text(
        "accelerator: cpu\ndevices: 1\nmax_epochs: 1\nlogger: false\nenable_progress_bar: false\n"
        f"enable_model_summary: false\ndefault_root_dir: {tmp_path / 'runs'}\ncallbacks:\n"
        "  - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "    init_args: {monitor: val/rsum, mode: max, filename: best}\n"
    )
    shared = [
        "--trainer", str(trainer), "--data.root", str(tiny_synthscenes),
        "--model.embed_dim", "32",
        "--model.text_encoder.init_args.word_dim", "32",
    ]
    runs = {}
    for name in ("vsepp", "scan_t2i"):
        config = str(repo / f"configs/experiment/{name}_synthscenes.yaml")
        main(["fit", "--config", config, *shared, "--data.batch_size", "32", "--trainer.callbacks.dirpath", str(tmp_path / name)])
        runs[name] = [config, str(tmp_path / name / "best.ckpt")]

    spec = importlib.util.spec_from_file_location("bench_two_stage", repo / "scripts/bench_two_stage.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    capsys.readouterr()
    bench.main(["--coarse", *runs["vsepp"], "--expensive", *runs["scan_t2i"], "--ks", "1", "3", "1000",
                "--threads", "1", "--output", str(out), "--", *shared])
    printed = capsys.readouterr().out
    assert "reduction" in printed and "smallest k" in printed
    res = json.loads(out.read_text())
    n_img = res["num_images"]
    assert res["num_captions"] == 5 * n_img and res["expensive"]["pairs"] == 5 * n_img * n_img
    by_k = {r["k"]: r for r in res["two_stage"]}
    assert by_k[1]["matcher_pairs"] < by_k[3]["matcher_pairs"] < by_k[1000]["matcher_pairs"] == 5 * n_img * n_img
    # a shortlist covering everything is the exhaustive evaluation
    assert by_k[1000]["rsum_diff"] == pytest.approx(0.0, abs=1e-9)
    assert res["smallest_k_within_tolerance"] is not None
    assert res["coarse_weight"] == 0.0 and res["ensemble"] is None

    # with a coarse weight, a full shortlist is the ensemble of the two whole matrices
    mixed = tmp_path / "mixed.json"
    bench.main(["--coarse", *runs["vsepp"], "--expensive", *runs["scan_t2i"], "--ks", "1", "1000", "--coarse-weight", "0.5",
                "--threads", "1", "--output", str(mixed), "--", *shared])
    assert "that ensemble on every pair" in capsys.readouterr().out
    res = json.loads(mixed.read_text())
    by_k = {r["k"]: r for r in res["two_stage"]}
    assert res["ensemble"]["weights"] == {"expensive": 0.5, "coarse": 0.5}
    assert by_k[1000]["rsum_diff_ensemble"] == pytest.approx(0.0, abs=1e-9)
    assert by_k[1000]["rsum"] == pytest.approx(res["ensemble"]["results"]["rsum"], abs=1e-9)


def test_full_shortlists_with_a_coarse_weight_equal_the_ensemble():
    """With every pair shortlisted, the mixed score is kgitm ensemble's weighted mean, metric for metric."""
    from kgitm.eval.ensemble import average_similarity

    coarse, expensive = _random(9, 5, seed=3)
    for w in (0.25, 0.5):
        got = two_stage_metrics(coarse, CountingRerank(expensive), k_images=9, k_captions=45, coarse_weight=w)
        mean = average_similarity([expensive.numpy().astype("float64"), coarse.numpy().astype("float64")], [1 - w, w])
        want = evaluate_retrieval(mean, 5)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (w, key)
        assert got["rsum"] != evaluate_retrieval(expensive.numpy(), 5)["rsum"]  # the weight changes the ranking here


def test_a_coarse_weight_mixes_only_the_candidates():
    """Short lists: each candidate holds (1 - w) e + w c, each other pair its shifted coarse score below."""
    coarse, expensive = _random(6, 5, seed=4)
    w = 0.4
    res = two_stage_similarity(coarse, CountingRerank(expensive), k_images=2, k_captions=3, coarse_weight=w)
    cand = res.candidates
    mixed = (1 - w) * expensive.double() + w * coarse.double()
    assert torch.allclose(res.i2t[cand], mixed[cand], atol=1e-12) and torch.equal(res.i2t, res.t2i)
    assert float(res.i2t[~cand].max()) < float(res.i2t[cand].min())
    # the non-candidates keep the coarse order
    off = res.i2t[~cand] - coarse.double()[~cand]
    assert torch.allclose(off, off[0].expand_as(off), atol=1e-9)
    with pytest.raises(ValueError, match="coarse_weight must lie in"):
        two_stage_similarity(coarse, CountingRerank(expensive), k_images=2, k_captions=3, coarse_weight=1.5)
