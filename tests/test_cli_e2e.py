"""End to end through the real CLI and the real configs: fit, resume, test, predict, evaluate, and a
fit with knowledge whose concept features come from the text encoder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kgitm.cli import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _common(data: Path, out: Path) -> list[str]:
    trainer = out.parent / "trainer.yaml"
    trainer.write_text(
        f"""accelerator: cpu
devices: 1
gradient_clip_val: 2.0
logger: false
enable_progress_bar: false
default_root_dir: {out}
callbacks:
  - class_path: lightning.pytorch.callbacks.ModelCheckpoint
    init_args: {{dirpath: {out / "ckpt"}, filename: best, monitor: val/rsum, mode: max, save_last: true}}
"""
    )
    return [
        "--config", str(REPO / "configs/experiment/vsepp_synthscenes.yaml"),
        "--trainer", str(trainer),
        "--data.root", str(data),
        "--data.batch_size", "32",
        "--model.embed_dim", "64",
        "--model.text_encoder.init_args.word_dim", "32",
    ]


def test_fit_resume_test_predict_evaluate(tiny_synthscenes, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    common = _common(tiny_synthscenes, out)

    main(["fit", *common, "--trainer.max_epochs", "2"])
    assert (out / "ckpt" / "best.ckpt").exists() and (out / "ckpt" / "last.ckpt").exists()
    before = torch.load(out / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)

    # resuming a finished run restores its loop state: nothing is trained again
    main(["fit", *common, "--trainer.max_epochs", "2", "--ckpt_path", str(out / "ckpt" / "last.ckpt")])
    same = torch.load(out / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert same["global_step"] == before["global_step"]
    assert all(torch.equal(same["state_dict"][k], v) for k, v in before["state_dict"].items())
    # resume an "interrupted" run from its last checkpoint: one more epoch, the step count continues
    main(["fit", *common, "--trainer.max_epochs", "3", "--ckpt_path", str(out / "ckpt" / "last.ckpt")])
    after = torch.load(out / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert after["global_step"] == before["global_step"] * 3 // 2

    capsys.readouterr()
    main(["test", *common, "--ckpt_path", str(out / "ckpt" / "best.ckpt")])
    printed = capsys.readouterr().out
    assert "RSUM" in printed and "relation_swap_acc" in printed
    res_files = list(out.rglob("test_results.json"))
    assert res_files, "test must write its results as JSON"
    res = json.loads(res_files[0].read_text())["results"]
    for key in ("i2t_r1", "t2i_r1", "rsum", "relation_swap_acc", "attribute_swap_acc", "synonym_shift_rsum"):
        assert key in res and np.isfinite(res[key])
    assert 0.0 <= res["relation_swap_acc"] <= 100.0

    sims_path = tmp_path / "sims.npy"
    main(["predict", *common, "--ckpt_path", str(out / "ckpt" / "best.ckpt"), "--sims_out", str(sims_path)])
    sims = np.load(sims_path)
    n_img = np.load(tiny_synthscenes / "test_ims.npy", mmap_mode="r").shape[0]
    assert sims.shape == (n_img, 5 * n_img)

    # the standalone evaluator gives the same numbers as the test loop
    main(["evaluate", str(sims_path), "--output", str(tmp_path / "ev.json")])
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["rsum"] == pytest.approx(res["rsum"], abs=1e-3)

    # every protocol in `kgitm test`, with kgitm evaluate's keys and values (folds of 8 images here:
    # tiny's test split has 16)
    main(["test", *common, "--ckpt_path", str(out / "ckpt" / "best.ckpt"), "--protocol", "coco5k,coco1k",
          "--data.fold_images", "8", "--trainer.default_root_dir", str(tmp_path / "protocols")])
    written = json.loads(next((tmp_path / "protocols").rglob("test_results.json")).read_text())
    assert set(written["protocols"]) == {"coco5k", "coco1k"}
    for protocol in ("coco5k", "coco1k"):
        main(["evaluate", str(sims_path), "--protocol", protocol, "--fold-images", "8", "--output", str(tmp_path / f"{protocol}.json")])
        expected = json.loads((tmp_path / f"{protocol}.json").read_text())
        assert written["protocols"][protocol].keys() == expected.keys()
        assert written["protocols"][protocol]["rsum"] == pytest.approx(expected["rsum"], abs=1e-3)
    assert len(written["protocols"]["coco1k"]["folds"]) == 2
    assert written["results"]["rsum"] == pytest.approx(written["protocols"]["coco5k"]["rsum"])  # the first is the headline
    with pytest.raises(SystemExit, match="16 images, not a multiple of data.fold_images 1000"):
        main(["test", *common, "--ckpt_path", str(out / "ckpt" / "best.ckpt"), "--protocol", "coco1k"])


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    assert "unknown command" in capsys.readouterr().err


def test_help_lists_every_command(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    from kgitm.cli import COMMANDS

    for name in ["fit", "test", "predict", *COMMANDS]:
        assert name in out


def test_fit_with_concept_features_from_the_text_encoder(tiny_synthscenes, tmp_path, monkeypatch):
    from kgitm.cli.build_concepts import main as build_concepts
    from kgitm.cli.lightning import run_lightning_cli

    if not Path(os.environ.get("KGITM_WORDNET_DIR", "/usr/share/wordnet"), "index.noun").exists():
        pytest.skip("WordNet files not found (apt-get install wordnet-base wordnet-sense-index)")
    monkeypatch.chdir(tmp_path)
    build_concepts([str(tiny_synthscenes / "train_caps.txt"), "--name", "synthscenes", "--objects", "20",
                    "--properties", "5", "--motions", "3", "--no-progress"])
    out = tmp_path / "run"
    cli = run_lightning_cli([
        "fit", *_common(tiny_synthscenes, out),
        "--model.knowledge", str(REPO / "configs/knowledge/wordnet_text_encoder.yaml"),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
    ])
    k, enc = cli.model.knowledge, cli.model.text_encoder
    assert k.gcn1.in_features == 32 and k.num_unknown_concepts == 0  # concepts come from the training captions
    feats, known = enc.embed_words(k.concepts)
    assert known.all() and torch.equal(k.concept_features(), feats)  # still tied to the trained table
    state = torch.load(out / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert "model.knowledge.gcn1.weight" in state and not any(key.startswith("model.knowledge.") and "embed" in key for key in state)
