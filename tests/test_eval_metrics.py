"""Retrieval metrics: hand-computed cases, chunked/vectorised vs a plain loop, COCO 1K folds,
the RSUM trap, diagnostics accuracy, errors, report tables and the ``kgitm evaluate`` CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from kgitm.cli import main as cli_main
from kgitm.eval.metrics import (
    METRIC_KEYS,
    evaluate_retrieval,
    pairwise_accuracy,
    recall_metrics,
    retrieval_ranks,
)
from kgitm.core.io import atomic_write_json as write_json
from kgitm.eval.report import format_markdown_table, format_retrieval_table


def _naive_ranks(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain-loop reference: position of the ground truth in a stable descending sort."""
    sims = np.asarray(sims)
    n_img, n_cap = sims.shape

    def position(scores: list[float], target: int) -> int:
        # rank = #strictly higher + #tied with a lower index
        s = scores[target]
        return sum(1 for c, v in enumerate(scores) if v > s or (v == s and c < target))

    i2t = np.empty(n_img, dtype=np.int64)
    for i in range(n_img):
        row = [float(v) for v in sims[i]]
        i2t[i] = min(position(row, j) for j in range(k * i, k * i + k))
    t2i = np.empty(n_cap, dtype=np.int64)
    for j in range(n_cap):
        col = [float(v) for v in sims[:, j]]
        t2i[j] = position(col, j // k)
    return i2t, t2i


# 3 images x 6 captions, k = 2: image i owns captions 2i, 2i+1.
HAND = np.array(
    [
        [0.9, 0.1, 0.8, 0.3, 0.2, 0.5],
        [0.7, 0.6, 0.1, 0.2, 0.5, 0.3],
        [0.1, 0.2, 0.6, 0.9, 0.4, 0.3],
    ]
)
# i2t (sort each row, best ground-truth caption):
#   img0: GT c0=.9, c1=.1; c0 is the top score                  -> rank 0
#   img1: GT c2=.1, c3=.2; order c0 .7, c1 .6, c4 .5, c5 .3, c3 .2 -> rank 4
#   img2: GT c4=.4, c5=.3; order c3 .9, c2 .6, c4 .4              -> rank 2
HAND_I2T = [0, 4, 2]
# t2i (sort each column, the caption's image):
#   c0 (img0): .9 .7 .1 -> 0     c1 (img0): .1 .6 .2 -> 2     c2 (img1): .8 .1 .6 -> 2
#   c3 (img1): .3 .2 .9 -> 2     c4 (img2): .2 .5 .4 -> 1
#   c5 (img2): .5 .3 .3 -> img0 higher (1) + img1 tied with a lower index (1) -> 2
HAND_T2I = [0, 2, 2, 2, 1, 2]
HAND_METRICS = {
    # i2t ranks [0, 4, 2]: R@1 = 1/3, R@5 = R@10 = 3/3, median 2 -> medr 3, mean 2 -> meanr 3
    "i2t_r1": 100 / 3,
    "i2t_r5": 100.0,
    "i2t_r10": 100.0,
    "i2t_medr": 3.0,
    "i2t_meanr": 3.0,
    # t2i ranks [0, 2, 2, 2, 1, 2]: R@1 = 1/6, R@5 = R@10 = 6/6,
    # sorted [0, 1, 2, 2, 2, 2], median 2 -> medr 3, mean 9/6 = 1.5 -> meanr 2.5
    "t2i_r1": 100 / 6,
    "t2i_r5": 100.0,
    "t2i_r10": 100.0,
    "t2i_medr": 3.0,
    "t2i_meanr": 2.5,
    # 33.33 + 100 + 100 + 16.67 + 100 + 100
    "rsum": 450.0,
}


def _assert_metrics_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


# --------------------------------------------------------------------------- hand-computed


def test_hand_computed_ranks_and_metrics() -> None:
    i2t, t2i = retrieval_ranks(HAND, captions_per_image=2)
    assert i2t.tolist() == HAND_I2T
    assert t2i.tolist() == HAND_T2I
    _assert_metrics_close(recall_metrics(i2t, t2i), HAND_METRICS)
    _assert_metrics_close(evaluate_retrieval(HAND, 2), HAND_METRICS)
    # float32 storage of the same matrix keeps the tie in column 5 and gives the same answer
    _assert_metrics_close(evaluate_retrieval(HAND.astype(np.float32), 2), HAND_METRICS)


def test_metric_keys_exact_and_plain_floats() -> None:
    out = evaluate_retrieval(HAND, 2)
    assert list(out) == list(METRIC_KEYS)
    assert set(METRIC_KEYS) == {
        "i2t_r1", "i2t_r5", "i2t_r10", "i2t_medr", "i2t_meanr",
        "t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr", "t2i_meanr", "rsum",
    }  # fmt: skip
    assert all(type(v) is float for v in out.values())
    json.dumps(out)  # JSON-serialisable as is


def test_perfect_diagonal() -> None:
    n, k = 7, 5
    sims = np.kron(np.eye(n), np.ones((1, k))).astype(np.float32)  # GT 1, everything else 0
    out = evaluate_retrieval(sims, k)
    for d in ("i2t", "t2i"):
        assert out[f"{d}_r1"] == out[f"{d}_r5"] == out[f"{d}_r10"] == 100.0
        assert out[f"{d}_medr"] == 1.0
        assert out[f"{d}_meanr"] == 1.0
    assert out["rsum"] == 600.0


def test_ties_lower_index_wins() -> None:
    # A constant matrix: everything ties, so ranks are the ground truth's (first) index.
    n, k = 4, 3
    i2t, t2i = retrieval_ranks(np.zeros((n, n * k)), k)
    assert i2t.tolist() == [k * i for i in range(n)]  # k*i captions of earlier images come first
    assert t2i.tolist() == [j // k for j in range(n * k)]  # j//k earlier images come first


def test_median_of_even_count_is_floored() -> None:
    out = recall_metrics(np.array([0, 1]), np.array([0, 3, 4, 10]))
    assert out["i2t_medr"] == 1.0  # floor(0.5) + 1
    assert out["t2i_medr"] == 4.0  # floor(3.5) + 1
    assert out["t2i_meanr"] == pytest.approx(5.25)  # mean 4.25 + 1
    assert out["t2i_r5"] == 75.0 and out["t2i_r10"] == 75.0 and out["t2i_r1"] == 25.0


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 2, 5])
def test_vectorised_matches_naive_loop_continuous(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 13))
    sims = rng.standard_normal((n, n * k)).astype(np.float32)
    want = _naive_ranks(sims, k)
    for chunk_rows in (None, 1, 2, 5):
        got = retrieval_ranks(sims, k, chunk_rows=chunk_rows)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("levels", [2, 4])
def test_vectorised_matches_naive_loop_with_ties(seed: int, k: int, levels: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 15))
    sims = rng.integers(0, levels, size=(n, n * k))  # integer scores: ties everywhere
    want = _naive_ranks(sims, k)
    for matrix in (sims, sims.astype(np.float64)):
        for chunk_rows in (None, 1, 3):
            got = retrieval_ranks(matrix, k, chunk_rows=chunk_rows)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])


def test_memmap_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    sims = rng.integers(0, 3, size=(9, 27)).astype(np.float32)
    path = tmp_path / "sims.npy"
    np.save(path, sims)
    mm = np.load(path, mmap_mode="r", allow_pickle=False)
    want = _naive_ranks(sims, 3)
    got = retrieval_ranks(mm, 3, chunk_rows=2)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


# --------------------------------------------------------------------------- protocols


def test_coco1k_folds_match_separate_folds() -> None:
    rng = np.random.default_rng(7)
    n_fold, folds, k = 6, 4, 5
    n = n_fold * folds
    sims = rng.standard_normal((n, n * k)) + 1.5 * np.kron(np.eye(n), np.ones((1, k)))
    out = evaluate_retrieval(sims, k, "coco1k", fold_images=n_fold)
    assert set(out) == set(METRIC_KEYS) | {"folds"}
    assert len(out["folds"]) == folds
    separate = [
        evaluate_retrieval(sims[f * n_fold : (f + 1) * n_fold, f * n_fold * k : (f + 1) * n_fold * k], k)
        for f in range(folds)
    ]
    for got, want in zip(out["folds"], separate):
        _assert_metrics_close(got, want)
    for key in METRIC_KEYS:
        assert out[key] == pytest.approx(np.mean([f[key] for f in separate]), abs=1e-9), key
    recalls = [f"{d}_r{r}" for d in ("i2t", "t2i") for r in (1, 5, 10)]
    assert out["rsum"] == pytest.approx(sum(out[r] for r in recalls), abs=1e-9)
    # the folds only see their diagonal block: off-diagonal scores do not matter
    shuffled = sims.copy()
    shuffled[:n_fold, n_fold * k :] = 100.0
    changed = evaluate_retrieval(shuffled, k, "coco1k", fold_images=n_fold)
    for key in METRIC_KEYS:
        assert changed[key] == out[key], key
    json.dumps(out)


def test_coco5k_is_single_and_differs_from_coco1k() -> None:
    rng = np.random.default_rng(8)
    sims = rng.standard_normal((10, 50))
    assert evaluate_retrieval(sims, 5, "coco5k") == evaluate_retrieval(sims, 5, "single")
    folded = evaluate_retrieval(sims, 5, "coco1k", fold_images=2)
    # folds of 2 images / 10 captions: a best GT caption ranks <= 5, an image <= 1
    assert folded["i2t_r10"] == 100.0 and folded["t2i_r5"] == 100.0
    assert evaluate_retrieval(sims, 5, "single")["t2i_r5"] < 100.0


def test_rsum_is_the_true_sum_not_six_times_i2t_mean() -> None:
    out = evaluate_retrieval(HAND, 2)
    recalls = [out[f"{d}_r{r}"] for d in ("i2t", "t2i") for r in (1, 5, 10)]
    assert out["rsum"] == pytest.approx(sum(recalls))
    six_times_i2t = 6 * np.mean([out["i2t_r1"], out["i2t_r5"], out["i2t_r10"]])
    assert six_times_i2t == pytest.approx(466.6666667)  # the printed number of the public code
    assert not math.isclose(out["rsum"], six_times_i2t)
    # and the same for the 5-fold average
    sims = np.block([[HAND, np.zeros((3, 6))], [np.zeros((3, 6)), HAND]])
    folded = evaluate_retrieval(sims, 2, "coco1k", fold_images=3)
    assert folded["rsum"] == pytest.approx(450.0)


# --------------------------------------------------------------------------- diagnostics


def test_pairwise_accuracy() -> None:
    assert pairwise_accuracy(np.array([0.9, 0.5, 0.2, 0.7]), np.array([0.1, 0.6, 0.2, 0.3])) == 50.0
    assert pairwise_accuracy(np.ones(3), np.zeros(3)) == 100.0
    assert pairwise_accuracy(np.zeros(5), np.zeros(5)) == 0.0  # ties fail
    assert type(pairwise_accuracy([1.0], [0.0])) is float
    with pytest.raises(ValueError, match="same shape"):
        pairwise_accuracy(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        pairwise_accuracy(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="finite"):
        pairwise_accuracy(np.array([1.0, np.nan]), np.zeros(2))


# --------------------------------------------------------------------------- errors


def test_non_multiple_shape_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(3, 7\).*\(3, 6\)"):
        retrieval_ranks(np.zeros((3, 7)), 2)
    with pytest.raises(ValueError, match="transposed"):
        retrieval_ranks(np.zeros((10, 2)), 5)
    with pytest.raises(ValueError, match="2-D"):
        retrieval_ranks(np.zeros(10), 5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_names_first_entry(bad: float) -> None:
    sims = np.zeros((4, 8), dtype=np.float32)
    sims[2, 5] = bad
    sims[3, 0] = bad
    for chunk_rows in (None, 1, 3):
        with pytest.raises(ValueError, match=r"finite.*row 2, col 5"):
            retrieval_ranks(sims, 2, chunk_rows=chunk_rows)
    for protocol in ("single", "coco1k"):
        with pytest.raises(ValueError, match=r"row 2, col 5"):
            evaluate_retrieval(sims, 2, protocol, fold_images=2)
    # coco1k checks off-diagonal blocks too (full-matrix coordinates)
    sims = np.zeros((4, 8))
    sims[0, 7] = bad
    with pytest.raises(ValueError, match=r"row 0, col 7"):
        evaluate_retrieval(sims, 2, "coco1k", fold_images=2)


def test_protocol_errors() -> None:
    with pytest.raises(ValueError, match="multiple of fold_images=4"):
        evaluate_retrieval(np.zeros((6, 12)), 2, "coco1k", fold_images=4)
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_retrieval(np.zeros((6, 12)), 2, "coco2k")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- report


def test_tables_and_json(tmp_path: Path) -> None:
    res = evaluate_retrieval(HAND, 2)
    extra = dict(res, relation_swap_acc=61.25, attribute_swap_acc=70.0, note="text", flag=True)
    text = format_retrieval_table({"vsepp": res, "gsmn": extra}, title="toy")
    lines = text.splitlines()
    assert lines[0] == "toy"
    header = lines[2]
    assert "RSUM" in header and "R@10" in header and "meanr" in header
    # extras: numeric only, alphabetical, missing ones shown as "-"
    assert header.index("attribute_swap_acc") < header.index("relation_swap_acc")
    assert "note" not in header and "flag" not in header
    vsepp = next(line for line in lines if line.startswith("vsepp"))
    assert "33.3" in vsepp and "450.0" in vsepp and vsepp.rstrip().endswith("-")
    assert len({len(line) for line in lines[3:]}) == 1  # fixed width rows
    md = format_markdown_table({"vsepp": res, "gsmn": extra}, title="toy")
    md_lines = md.splitlines()
    assert md_lines[0] == "**toy**"
    assert md_lines[2].startswith("| model | i2t R@1 |") and "| RSUM |" in md_lines[2]
    assert all(line.count("|") == md_lines[2].count("|") for line in md_lines[2:])
    # folds list is not a column
    folded = evaluate_retrieval(HAND, 2, "coco1k", fold_images=3)
    assert "folds" not in format_retrieval_table({"x": folded})

    out = tmp_path / "sub" / "r.json"
    write_json(out, {"b": np.float32(1.5), "a": [np.int64(2)]})
    assert out.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1.5\n}\n'
    write_json(out, {"c": 1})  # replaces atomically, no temp files left behind
    assert json.loads(out.read_text()) == {"c": 1}
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]


# --------------------------------------------------------------------------- CLI


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sims.npy"
    np.save(path, HAND.astype(np.float32))
    out = tmp_path / "results.json"
    cli_main(["evaluate", str(path), "--captions-per-image", "2", "--output", str(out)])
    data = json.loads(out.read_text())
    assert set(data) == set(METRIC_KEYS)
    _assert_metrics_close(data, HAND_METRICS)
    printed = capsys.readouterr().out
    assert "RSUM" in printed and "450.0" in printed

    # captions x images, with --transpose
    np.save(path, HAND.T.copy())
    cli_main(["evaluate", str(path), "--captions-per-image", "2", "--output", str(out), "--transpose"])
    _assert_metrics_close(json.loads(out.read_text()), HAND_METRICS)

    # coco1k on a 6-image matrix with folds of 3
    big = np.block([[HAND, np.zeros((3, 6))], [np.zeros((3, 6)), HAND]])
    np.save(path, big)
    argv = ["evaluate", str(path), "--captions-per-image", "2", "--protocol", "coco1k"]
    cli_main([*argv, "--fold-images", "3", "--output", str(out)])
    data = json.loads(out.read_text())
    assert set(data) == set(METRIC_KEYS) | {"folds"}
    assert len(data["folds"]) == 2 and all(set(f) == set(METRIC_KEYS) for f in data["folds"])
    assert data["rsum"] == pytest.approx(450.0)


def test_cli_default_k_and_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "diag.npy"
    np.save(path, np.kron(np.eye(4), np.ones((1, 5))))
    cli_main(["evaluate", str(path)])
    printed = capsys.readouterr().out
    assert "600.0" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diag.npy"]


def _cli_error(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        cli_main(["evaluate", *argv])
    msg = str(exc.value.code)
    assert msg.startswith("kgitm evaluate: ") and "\n" not in msg
    return msg


def test_cli_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.npy"
    assert "no such file" in _cli_error([str(missing)])

    path = tmp_path / "s.npy"
    np.save(path, np.zeros((2, 3, 4)))
    assert "2-D" in _cli_error([str(path)])

    np.save(path, np.zeros((15, 3)))  # captions x images
    msg = _cli_error([str(path)])
    assert "(15, 3)" in msg and "--transpose" in msg
    np.save(path, np.zeros((4, 7)))
    msg = _cli_error([str(path)])
    assert "(4, 20)" in msg and "--transpose" not in msg

    sims = np.zeros((2, 10))
    sims[1, 3] = np.nan
    np.save(path, sims)
    msg = _cli_error([str(path)])
    assert str(path) in msg and "finite" in msg and "row 1, col 3" in msg

    np.save(path, np.zeros((3, 15)))
    assert "--fold-images" in _cli_error([str(path), "--protocol", "coco1k"])

    np.save(path, np.array([{"a": 1}], dtype=object))
    assert "np.save" in _cli_error([str(path)])


def test_cli_help_explains_options_and_layout(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["evaluate", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for needle in (
        "--captions-per-image",
        "--protocol",
        "--fold-images",
        "--output",
        "--transpose",
        "k*i .. k*i+k-1",
        "rsum",
        "folds",
    ):
        assert needle in text, needle
