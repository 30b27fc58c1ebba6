"""VSE-infinity end to end: ``kgitm fit`` then ``kgitm test`` of configs/experiment/vse_infty_synthscenes.yaml
through the real CLI on tiny SynthScenes (two epochs, so the all-negatives warm-up epoch and a hardest-negative
epoch both run), at a small joint size. The checkpoint holds the release's parts under kgitm's names (a later
converter maps ``img_enc.gpool.*`` / ``txt_enc.gpool.*`` / ``img_enc.mlp.*`` onto them by prefix)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kgitm.cli import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_fit_and_test_vse_infinity_through_the_cli(tiny_synthscenes, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    run = tmp_path / "run"
    common = [
        "--config", str(REPO / "configs/experiment/vse_infty_synthscenes.yaml"),
        "--data.root", str(tiny_synthscenes), "--data.batch_size", "32",
        "--model.embed_dim", "64", "--model.text_encoder.init_args.word_dim", "32",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]
    main(["fit", *common, "--run_dir", str(run), "--trainer.max_epochs", "2"])
    best = run / "checkpoints" / "best.ckpt"
    assert best.exists() and (run / "checkpoints" / "last.ckpt").exists()
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 2  # both epochs ran: the warm-up one (all negatives) and a hardest-negative one
    weights = state["state_dict"]
    for side in ("image_pool", "caption_pool"):
        assert weights[f"model.matcher.{side}.gru.weight_ih_l0"].shape == (96, 32)
        assert weights[f"model.matcher.{side}.linear.weight"].shape == (1, 32)
    assert weights["model.image_encoder.mlp.layers.0.weight"].shape[0] == 32  # embed_dim // 2
    assert "model.image_encoder.mlp.bns.0.running_mean" in weights

    # the trained GPOs load into a fresh matcher and give a distribution over the ranks
    from kgitm.matchers.global_embedding import GlobalEmbeddingMatcher

    matcher = GlobalEmbeddingMatcher("gpo")
    matcher.load_state_dict({k.removeprefix("model.matcher."): v for k, v in weights.items() if k.startswith("model.matcher.")})
    with torch.no_grad():
        for pool in (matcher.image_pool, matcher.caption_pool):
            w = pool.rank_weights(torch.tensor([8]), 8)[0]
            torch.testing.assert_close(w.sum(), torch.tensor(1.0))

    capsys.readouterr()
    main(["test", *common, "--ckpt_path", str(best)])
    assert "RSUM" in capsys.readouterr().out
    res = json.loads((run / "results_test.json").read_text())["results"]
    for key in ("i2t_r1", "t2i_r1", "rsum"):
        assert np.isfinite(res[key])
