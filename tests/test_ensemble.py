"""``kgitm ensemble``: chunked weighted averaging, member checks, and an end-to-end run on two tiny
trained models through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kgitm.cli import main
from kgitm.eval.ensemble import EnsembleError, average_similarity
from kgitm.eval.metrics import evaluate_retrieval

REPO = Path(__file__).resolve().parents[1]


def _mats(n: int = 7, k: int = 5, count: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, k * n)).astype(np.float32) for _ in range(count)]


@pytest.mark.parametrize("chunk_rows", [None, 1, 2, 5])
def test_average_matches_numpy_exactly(chunk_rows):
    a, b, c = _mats()
    got = average_similarity([a, b, c], chunk_rows=chunk_rows)
    w = 1.0 / 3.0  # the same float64 operations in the same order, on whole arrays
    want = ((w * a.astype(np.float64) + w * b.astype(np.float64)) + w * c.astype(np.float64)).astype(np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, np.mean([a, b, c], axis=0), rtol=1e-6, atol=1e-6)


def test_weights_are_normalised():
    a, b = _mats(count=2)
    got = average_similarity([a, b], [3.0, 1.0], chunk_rows=3)
    np.testing.assert_allclose(got, np.average([a, b], axis=0, weights=[3, 1]), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(average_similarity([a, b], [2.0, 0.0]), a)
    with pytest.raises(EnsembleError, match="2 weights for 3"):
        average_similarity([a, b, a], [1.0, 1.0])
    with pytest.raises(EnsembleError, match="non-negative"):
        average_similarity([a, b], [1.0, -1.0])


def test_shape_mismatch_names_both_files(tmp_path, capsys):
    a, _ = _mats(count=2)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", _mats(n=6, count=1)[0])
    with pytest.raises(SystemExit) as err:
        main(["ensemble", str(tmp_path / "a.npy"), str(tmp_path / "b.npy")])
    msg = str(err.value)
    assert "a.npy has shape (7, 35)" in msg and "b.npy has shape (6, 30)" in msg
    assert "\n" not in msg


def test_non_finite_member_is_named(tmp_path):
    a, b = _mats(count=2)
    b[3, 4] = np.nan
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    with pytest.raises(SystemExit, match=r"b\.npy: entry \(row 3, col 4\) is nan"):
        main(["ensemble", str(tmp_path / "a.npy"), str(tmp_path / "b.npy")])


def test_saved_matrices_table_json_and_sims_out(tmp_path, capsys):
    a, b = _mats(count=2)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    out, avg = tmp_path / "res.json", tmp_path / "avg.npy"
    main(["ensemble", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--weights", "1", "3", "--output", str(out), "--sims-out", str(avg)])
    printed = capsys.readouterr().out
    assert "RSUM" in printed and "ensemble" in printed and "\na " in printed
    saved = np.load(avg)
    np.testing.assert_allclose(saved, 0.25 * a + 0.75 * b, rtol=1e-6, atol=1e-6)
    res = json.loads(out.read_text())
    assert res["weights"] == [0.25, 0.75]
    assert res["ensemble"] == evaluate_retrieval(saved, 5)
    assert [m["name"] for m in res["members"]] == ["a", "b"]
    assert res["members"][0]["results"] == evaluate_retrieval(a, 5)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_rows_say_one_model_or_an_ensemble_of_n(tmp_path, capsys):
    """The table's models column and the JSON record 1 per member and N for the ensemble;
    kgitm compare reads the ensemble file as one row of N models beside a single model's file."""
    mats = _mats(count=3)
    for name, m in zip("abc", mats):
        np.save(tmp_path / f"{name}.npy", m)
    out = tmp_path / "res.json"
    main(["ensemble", *(str(tmp_path / f"{n}.npy") for n in "abc"), "--output", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert next(line for line in lines if line.startswith("model")).split()[:2] == ["model", "models"]
    counts = {line.split()[0]: line.split()[1] for line in lines if line.split() and line.split()[0] in ("a", "b", "c", "ensemble")}
    assert counts == {"a": "1", "b": "1", "c": "1", "ensemble": "3"}
    res = json.loads(out.read_text())
    assert res["models"] == 3 and res["name"] == "ensemble(a + b + c)" and [m["models"] for m in res["members"]] == [1, 1, 1]
    single = tmp_path / "a_test.json"
    single.write_text(json.dumps({"name": "a", "models": 1, "results": res["members"][0]["results"]}))
    main(["compare", str(single), str(out)])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["a", "1"] in [r[:2] for r in rows] and ["ensemble(a", "+"] in [r[:2] for r in rows]
    assert next(r for r in rows if r[0] == "ensemble(a")[5] == "3"  # "ensemble(a + b + c)" is five words


def test_coco1k_protocol(tmp_path, capsys):
    a, b = _mats(n=4, count=2)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    main(["ensemble", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--protocol", "coco1k", "--fold-images", "2", "--output", str(tmp_path / "r.json")])
    res = json.loads((tmp_path / "r.json").read_text())
    assert len(res["ensemble"]["folds"]) == 2
    assert res["ensemble"]["rsum"] == pytest.approx(evaluate_retrieval((a + b) / 2, 5, "coco1k", fold_images=2)["rsum"])


@pytest.mark.slow
def test_two_trained_models_end_to_end(tiny_synthscenes, tmp_path, monkeypatch, capsys):
    """VSE++ with mean and with max pooling, 1 epoch each, ensembled from their checkpoints."""
    monkeypatch.chdir(tmp_path)
    trainer = tmp_path / "trainer.yaml"
    trainer.write_text(
        f"""accelerator: cpu
devices: 1
max_epochs: 1
logger: false
enable_progress_bar: false
enable_model_summary: false
default_root_dir: {tmp_path / "runs"}
callbacks:
  - class_path: lightning.pytorch.callbacks.ModelCheckpoint
    init_args: {{monitor: val/rsum, mode: max, filename: best}}
"""
    )
    config = str(REPO / "configs/experiment/vsepp_synthscenes.yaml")
    shared = [
        "--trainer", str(trainer),
        "--data.root", str(tiny_synthscenes),
        "--model.embed_dim", "32",
        "--model.text_encoder.init_args.word_dim", "32",
    ]
    ckpts = []
    for pooling in ("mean", "max"):
        ckpt_dir = tmp_path / pooling
        main(["fit", "--config", config, *shared, "--data.batch_size", "32",
              "--model.matcher.init_args.pooling", pooling, "--trainer.callbacks.dirpath", str(ckpt_dir)])
        ckpts.append(ckpt_dir / "best.ckpt")
        assert ckpts[-1].exists()

    # --run members get their own pooling through a per-run config file
    max_cfg = tmp_path / "vsepp_max.yaml"
    max_cfg.write_text(f"data: {REPO}/configs/data/synthscenes.yaml\nmodel: {REPO}/configs/model/vsepp.yaml\n"
                       f"trainer: {REPO}/configs/trainer/cpu.yaml\n")
    max_model = tmp_path / "model_max.yaml"
    max_model.write_text((REPO / "configs/model/vsepp.yaml").read_text().replace("pooling: mean", "pooling: max"))
    max_cfg.write_text(max_cfg.read_text().replace(f"{REPO}/configs/model/vsepp.yaml", str(max_model)))

    capsys.readouterr()
    sims_dir, out = tmp_path / "sims", tmp_path / "ensemble.json"
    main(["ensemble", "--run", config, str(ckpts[0]), "--run", str(max_cfg), str(ckpts[1]),
          "--run-sims-dir", str(sims_dir), "--output", str(out), "--sims-out", str(tmp_path / "avg.npy"), "--", *shared])
    printed = capsys.readouterr().out
    assert "vsepp_synthscenes" in printed and "vsepp_max" in printed and "ensemble" in printed

    members = sorted(sims_dir.glob("*.npy"))
    assert len(members) == 2
    a, b = (np.load(p) for p in members)
    n_img = np.load(tiny_synthscenes / "test_ims.npy", mmap_mode="r").shape[0]
    assert a.shape == b.shape == (n_img, 5 * n_img)
    assert not np.allclose(a, b)  # two different models
    avg = np.load(tmp_path / "avg.npy")
    np.testing.assert_allclose(avg, (a.astype(np.float64) + b) / 2, rtol=1e-6, atol=1e-7)
    res = json.loads(out.read_text())
    assert res["ensemble"] == evaluate_retrieval(avg, 5)
    assert res["members"][1]["source"]["ckpt"] == str(ckpts[1])


def test_run_members_are_named_by_their_run(tmp_path):
    """A run's saved config (RUN/logs/config.yaml) names the member by the run, not 'logs'."""
    from kgitm.cli.ensemble import _run_name

    grid_run = tmp_path / "runs" / "grid" / "g" / "gsmn_sparse" / "seed0" / "logs" / "config.yaml"
    plain_run = tmp_path / "runs" / "my_vsepp" / "logs" / "config.yaml"
    converted = tmp_path / "converted" / "coco_vsepp" / "config.yaml"
    assert _run_name(str(grid_run)) == "gsmn_sparse/seed0"
    assert _run_name(str(plain_run)) == "my_vsepp"
    assert _run_name(str(converted)) == "coco_vsepp"
    assert _run_name("configs/experiment/vsepp_synthscenes.yaml") == "vsepp_synthscenes"
