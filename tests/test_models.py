"""The model layer: the hinge loss against a hand computation, MatchingModel in plain PyTorch (no
Lightning imported), loss terms summed by the task, checkpoints and configs of kgitm 0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from kgitm.models.losses import ContrastiveLoss, RetrievalHinge

REPO = Path(__file__).resolve().parents[1]

# image x caption similarities; positives on the diagonal
S = torch.tensor([[0.9, 0.8, 0.1], [0.3, 0.5, 0.6], [0.2, 0.1, 0.7]])


def test_contrastive_loss_equals_a_hand_computation():
    # [0.2 + S(i,k) - S(i,i)]_+ over captions k != i, and [0.2 + S(k,i) - S(i,i)]_+ over images k != i
    caption_costs = [[0.0, 0.1, 0.0], [0.0, 0.0, 0.3], [0.0, 0.0, 0.0]]  # rows: image i, cols: caption k
    image_costs = [[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.1, 0.0]]  # rows: image k, cols: caption i
    total = sum(map(sum, caption_costs)) + sum(map(sum, image_costs))
    hardest = sum(max(r) for r in caption_costs) + sum(max(image_costs[k][i] for k in range(3)) for i in range(3))
    assert ContrastiveLoss(0.2, max_violation=False)(S).item() == pytest.approx(total)
    assert ContrastiveLoss(0.2, max_violation=True)(S).item() == pytest.approx(hardest)
    assert ContrastiveLoss(0.2, max_violation=False, reduction="mean")(S).item() == pytest.approx(total / 3)
    # captions 0 and 1 of one image: not each other's negatives
    same = ContrastiveLoss(0.2, max_violation=False)(S, torch.tensor([0, 0, 1]))
    assert same.item() == pytest.approx(total - caption_costs[0][1] - image_costs[1][0])


def test_retrieval_hinge_warms_up_with_all_negatives():
    from types import SimpleNamespace

    term = RetrievalHinge(0.2, max_violation=True, warmup_epochs=1)
    batch = SimpleNamespace(image_index=torch.arange(3))
    out = SimpleNamespace(sims=S)
    assert term(None, batch, out, epoch=0).item() == pytest.approx(ContrastiveLoss(0.2, max_violation=False)(S).item())
    assert term(None, batch, out, epoch=1).item() == pytest.approx(ContrastiveLoss(0.2, max_violation=True)(S).item())


def test_matching_model_in_plain_pytorch(tiny_synthscenes):
    """Build a model from a committed config, score a batch and the whole test split with a plain
    DataLoader, and check that Lightning was never imported (a separate interpreter)."""
    script = textwrap.dedent(f"""
        import sys
        import torch
        from torch.utils.data import DataLoader
        from kgitm.core.text import Vocabulary
        from kgitm.data.precomp import PrecompSplit
        from kgitm.eval.metrics import evaluate_retrieval
        from kgitm.models.config import model_from_config
        from kgitm.pipeline import CaptionImageDataset, CaptionSet
        import numpy as np

        torch.manual_seed(0)
        root = {str(tiny_synthscenes)!r}
        vocab = Vocabulary.build(PrecompSplit(root, "train").captions)
        test = PrecompSplit(root, "test")
        model = model_from_config({str(REPO / "configs/model/scan_t2i.yaml")!r}, feature_dim=test.feature_dim,
                                  vocabulary=vocab, embed_dim=32).eval()
        caps = CaptionSet("test", test.captions, np.arange(test.num_captions) // 5)
        ds = CaptionImageDataset(test, caps, vocab, max_words=64, transforms=model.caption_transforms())
        loader = DataLoader(ds, batch_size=16, collate_fn=ds.collator())
        with torch.no_grad():
            out = model(next(iter(loader)))
        assert out.sims.shape == (16, 16) and torch.isfinite(out.sims).all()
        split = model.encode_split(loader)
        sims = model.similarity(split.images, split.captions)
        assert sims.shape == (test.num_images, test.num_captions)
        assert torch.equal(split.caption_image, torch.arange(test.num_captions) // 5)
        # the batch's block of the whole matrix is the batch's own score matrix
        torch.testing.assert_close(sims[:4, :16], out.sims[::5][:, :16][:4], atol=1e-5, rtol=0)
        res = evaluate_retrieval(sims.numpy(), 5)
        assert 0 <= res["rsum"] <= 600
        assert not any(m == "lightning" or m.startswith(("lightning.", "pytorch_lightning")) for m in sys.modules), "Lightning was imported"
        print("ok", round(res["rsum"], 3))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok")


def test_model_config_names_its_parts(tmp_path):
    from kgitm.core.text import Vocabulary
    from kgitm.models.config import model_from_config

    with pytest.raises(ValueError, match="no \\['matcher'\\]"):
        model_from_config({"image_encoder": {}, "text_encoder": {}}, feature_dim=4, vocabulary=Vocabulary(["a"]))
    bad = {"image_encoder": {"class_path": "kgitm.encoders.image.Nope"}, "text_encoder": {}, "matcher": {}}
    with pytest.raises(ValueError, match="kgitm.encoders.image.Nope"):
        model_from_config(bad, feature_dim=4, vocabulary=Vocabulary(["a"]))


def test_loss_terms_are_logged_and_summed_with_their_weights():
    from kgitm.encoders.image import RegionEncoder
    from kgitm.encoders.text import BiGRUTextEncoder
    from kgitm.lit.module import MatchingModule
    from kgitm.matchers.global_embedding import GlobalEmbeddingMatcher
    from kgitm.models.losses import RelationSwapHinge
    from test_hard_negatives import _batch

    torch.manual_seed(0)
    terms = [RetrievalHinge(weight=0.5), RelationSwapHinge(2.0, pairs=2)]
    task = MatchingModule(RegionEncoder(8, 16), BiGRUTextEncoder(20, 8, 16), GlobalEmbeddingMatcher(), loss=terms, embed_dim=16)
    logged = {}
    task.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
    batch = _batch()
    total = task.training_step(batch, 0)
    out = task.model(batch)
    want = 0.5 * terms[0](task.model, batch, out, epoch=0) + 2.0 * terms[1](task.model, batch, out, epoch=0)
    assert total.item() == pytest.approx(want.item(), abs=1e-6)
    assert set(logged) == {"train/retrieval_loss", "train/relation_swap_loss", "train/loss"}
    with pytest.raises(ValueError, match="share a name"):
        MatchingModule(RegionEncoder(8, 16), BiGRUTextEncoder(20, 8, 16), GlobalEmbeddingMatcher(),
                       loss=[RetrievalHinge(), RetrievalHinge()], embed_dim=16)
    with pytest.raises(ValueError, match="embed_dim 16 but model.embed_dim is 32"):
        MatchingModule(RegionEncoder(8, 16), BiGRUTextEncoder(20, 8, 16), GlobalEmbeddingMatcher(), embed_dim=32)


# ---- kgitm 0.1 configs and checkpoints ------------------------------------------------------------

OLD_MODEL = """\
image_encoder:
  class_path: kgitm.encoders.image.RegionEncoder
  init_args:
    embed_dim: 1024
text_encoder:
  class_path: kgitm.encoders.text.BiGRUTextEncoder
  init_args:
    word_dim: 300
    embed_dim: 1024
matcher:
  class_path: kgitm.matchers.sgm.SGM
  init_args:
    embed_dim: 1024
    num_layers: 1
loss:
  class_path: kgitm.losses.ContrastiveLoss
  init_args:
    margin: 0.35
    max_violation: true
    reduction: mean
hardest_negative_warmup_epochs: 1
relation_swap_weight: 1.0
relation_swap_pairs: 16
optimizer:
  class_path: torch.optim.Adam
  init_args:
    lr: 0.0002
"""


def test_old_configs_are_refused_with_the_converter_and_the_converter_works(tmp_path, capsys):
    import yaml

    from kgitm.cli import main
    from kgitm.cli.lightning import ConfigError, check_config_args

    old = tmp_path / "old.yaml"
    old.write_text(OLD_MODEL)
    with pytest.raises(ConfigError, match=r"old.yaml: written for kgitm 0.1 .*kgitm upgrade-config"):
        check_config_args(["--config", str(REPO / "configs/experiment/vsepp_synthscenes.yaml"), "--model", str(old)])
    new = tmp_path / "new.yaml"
    main(["upgrade-config", str(old), "--out", str(new)])
    cfg = yaml.safe_load(new.read_text())
    assert cfg["embed_dim"] == 1024 and "embed_dim" not in cfg["text_encoder"]["init_args"]
    assert "embed_dim" not in cfg["image_encoder"].get("init_args", {}) and "embed_dim" not in cfg["matcher"]["init_args"]
    assert [t["class_path"].rsplit(".", 1)[1] for t in cfg["loss"]] == ["RetrievalHinge", "RelationSwapHinge"]
    assert cfg["loss"][0]["init_args"] == {"margin": 0.35, "max_violation": True, "reduction": "mean", "warmup_epochs": 1}
    assert cfg["loss"][1]["init_args"] == {"weight": 1.0, "pairs": 16, "margin": 0.35, "reduction": "mean"}
    assert not any(k in cfg for k in ("hardest_negative_warmup_epochs", "relation_swap_weight", "relation_swap_pairs"))
    check_config_args(["--config", str(REPO / "configs/experiment/vsepp_synthscenes.yaml"), "--model", str(new)])
    assert "model.embed_dim" in capsys.readouterr().err


@pytest.mark.slow
def test_a_checkpoint_of_kgitm_0_1_loads_and_scores_the_same(tiny_synthscenes, tmp_path, monkeypatch, capsys):
    """Checkpoints written before the model layer hold the parameters at the top of the state dict
    (image_encoder.fc.weight, not model.image_encoder.fc.weight): kgitm test reads them as they are."""
    from kgitm.cli import main

    monkeypatch.chdir(tmp_path)
    trainer = tmp_path / "trainer.yaml"
    trainer.write_text(f"accelerator: cpu\ndevices: 1\nlogger: false\nenable_progress_bar: false\ndefault_root_dir: {tmp_path}\n"
                       "callbacks:\n  - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
                       f"    init_args: {{dirpath: {tmp_path / 'ckpt'}, filename: best}}\n")
    common = ["--config", str(REPO / "configs/experiment/vsepp_synthscenes.yaml"), "--trainer", str(trainer),
              "--data.root", str(tiny_synthscenes), "--model.embed_dim", "32", "--model.text_encoder.init_args.word_dim", "16",
              "--seed_everything", "0", "--trainer.max_epochs", "1"]
    main(["fit", *common])
    new = torch.load(tmp_path / "ckpt" / "best.ckpt", map_location="cpu", weights_only=False)
    old = dict(new, state_dict={k.removeprefix("model."): v for k, v in new["state_dict"].items()})
    assert "image_encoder.fc.weight" in old["state_dict"]
    torch.save(old, tmp_path / "old.ckpt")
    results = {}
    for name in ("best", "old"):
        path = tmp_path / "ckpt" / "best.ckpt" if name == "best" else tmp_path / "old.ckpt"
        main(["test", *common, "--ckpt_path", str(path), "--trainer.default_root_dir", str(tmp_path / name)])
        results[name] = json.loads(next((tmp_path / name).rglob("test_results.json")).read_text())["results"]
    assert results["old"] == results["best"]
