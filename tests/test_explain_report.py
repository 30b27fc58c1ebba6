"""``kgitm explain`` and ``kgitm report`` end to end on tiny SynthScenes runs of every matcher, trained
through the real CLI and configs: the PNG, the JSON and the HTML are written for each; the JSON's
alignments are the attention the matcher computed (recorded by a hook on the shared attention
function while ``kgitm explain`` ran), its score is the one ``kgitm predict`` saved; the page renders
in a headless browser (skipped, saying why, when none is installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import kgitm.matchers.gsmn as gsmn_module
import kgitm.matchers.scan as scan_module
import kgitm.matchers.sgm as sgm_module
import kgitm.matchers.sgraf as sgraf_module
from kgitm.cli import main

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "configs" / "experiment"
KNOWLEDGE = REPO / "configs" / "knowledge"
pytestmark = pytest.mark.slow

HAS_WORDNET = Path(os.environ.get("KGITM_WORDNET_DIR", "/usr/share/wordnet"), "index.noun").exists()

#: run name -> (experiment config, extra arguments); one run per matcher, knowledge in both modes
RUNS: dict[str, tuple[str, list[str]]] = {
    "vsepp": ("vsepp_synthscenes.yaml", []),
    "scan_t2i": ("scan_t2i_synthscenes.yaml", []),
    "scan_i2t": ("scan_i2t_synthscenes.yaml", []),
    "gsmn_sparse": ("gsmn_sparse_synthscenes.yaml", ["--model.matcher.init_args.num_blocks", "4"]),
    "sgm": ("sgm_synthscenes.yaml", []),
    "sgraf_sgr": ("sgraf_sgr_synthscenes.yaml", []),
}
if HAS_WORDNET:
    RUNS["sgm_wordnet"] = ("sgm_synthscenes.yaml", ["--model.knowledge", str(KNOWLEDGE / "wordnet.yaml")])
    RUNS["scan_consensus"] = ("scan_t2i_synthscenes.yaml", ["--model.knowledge", str(KNOWLEDGE / "wordnet_consensus.yaml")])


def _common(root: Path, experiment: str, extra: list[str]) -> list[str]:
    return [
        "--config", str(EXPERIMENTS / experiment),
        "--data.root", str(root / "tiny"), "--data.graph_store", str(root / "graphs"),
        "--data.batch_size", "32", "--model.embed_dim", "32", "--model.text_encoder.init_args.word_dim", "16",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false", *extra,
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Tiny SynthScenes, its graph stores, a concept vocabulary, and one trained run per entry of
    :data:`RUNS` under ``root/runs`` (``scan_t2i`` also tested and predicted: results and matrix)."""
    from kgitm.cli.build_concepts import main as build_concepts
    from kgitm.cli.preprocess import main as preprocess
    from kgitm.data.synthscenes import generate

    root = tmp_path_factory.mktemp("explain")
    cwd = os.getcwd()
    os.chdir(root)  # the knowledge configs name graphs/concepts/synthscenes relative to the working directory
    try:
        generate(root / "tiny", preset="tiny", seed=0)
        assert preprocess(["--config", str(REPO / "configs/preprocess/synthscenes.yaml"), "--data-root", str(root / "tiny"),
                           "--out", str(root / "graphs"), "--progress", "false"]) == 0
        if HAS_WORDNET:
            build_concepts([str(root / "tiny" / "train_caps.txt"), "--name", "synthscenes", "--objects", "20",
                            "--properties", "5", "--motions", "3", "--no-progress"])
        for name, (experiment, extra) in RUNS.items():
            main(["fit", *_common(root, experiment, extra), "--run_dir", str(root / "runs" / name)])
        ckpt = str(root / "runs" / "scan_t2i" / "checkpoints" / "best.ckpt")
        for command in ("test", "predict"):
            main([command, *_common(root, "scan_t2i_synthscenes.yaml", []), "--ckpt_path", ckpt])
    finally:
        os.chdir(cwd)
    return root


class _Recorder:
    """Wraps a module-level function and keeps a copy of every value it returns."""

    def __init__(self, fn):
        self.fn, self.values = fn, []

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        self.values.append(out.detach().clone())
        return out


def _check_png(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file() and path.stat().st_size > 10_000, path
    pixels = mpimg.imread(path)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600 and pixels[..., :3].std() > 0.05


@pytest.mark.parametrize("name", list(RUNS))
def test_explain_writes_the_picture_and_the_matchers_own_alignments(runs, name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(runs)
    hooks = {"scan": _Recorder(scan_module.cross_attention), "gsmn": _Recorder(gsmn_module.cross_attention),
             "sgm": _Recorder(sgm_module._best_match_mean)}
    monkeypatch.setattr(scan_module, "cross_attention", hooks["scan"])
    monkeypatch.setattr(sgraf_module, "cross_attention", hooks["scan"])  # SGRAF's local alignments: SCAN's attention
    monkeypatch.setattr(gsmn_module, "cross_attention", hooks["gsmn"])
    monkeypatch.setattr(sgm_module, "_best_match_mean", hooks["sgm"])
    out = tmp_path / f"{name}.png"
    assert main(["explain", str(runs / "runs" / name), "--image", "2", "--caption", "11", "--out", str(out)]) in (None, 0)
    _check_png(out)
    expl = json.loads(out.with_suffix(".json").read_text())
    al = expl["alignments"]
    assert expl["caption"] == 11 and expl["image"] == 2 and len(expl["words"]) == len(expl["dependency"]["tokens"])
    assert 1 <= expl["ranks"]["image_among_images"] <= 16 and 1 <= expl["ranks"]["caption_among_captions"] <= 80
    assert al["score"] == pytest.approx(expl["score"])
    assert len(expl["regions"]) == 8 and all(len(r["box"]) == 4 for r in expl["regions"])

    # the first attention computed after loading is the pair's, by the matcher's own forward code
    if "word_region_attention" in al and name.startswith("gsmn"):
        att_t2i, att_i2t = hooks["gsmn"].values[:2]  # (N, M, L, R), (M, L, N, R) with N = M = 1
        assert torch.equal(torch.tensor(al["word_region_attention"]), att_t2i[0, 0])
        assert torch.equal(torch.tensor(al["region_word_attention"]), att_i2t[0, :, 0, :].t())
        assert len(al["word_score"]) == len(expl["words"]) and len(al["region_score"]) == 8
    elif name.startswith(("scan", "sgraf")):
        att = hooks["scan"].values[0][0, :, 0, :].t()  # (P, C, S, Q) -> queries by context items
        key = "region_word_attention" if name == "scan_i2t" else "word_region_attention"
        assert torch.equal(torch.tensor(al[key]), att)
    elif name.startswith("sgm"):
        obj, rel = hooks["sgm"].values[:2]  # the object- and relation-level scores forward pooled
        assert al["object_score"] == obj[0, 0].item() and al["relation_score"] == rel[0, 0].item()
        assert expl["sgm_text_graph"]["objects"] and expl["visual_scene_graph"]["slots"]["objects"]
    if name in ("sgm_wordnet", "scan_consensus"):
        assert expl["concepts"]["words"], "the caption's words reach WordNet concepts"
    if name == "scan_consensus":
        assert {"base_score", "consensus_score", "image_concepts"} <= set(al)
    if name == "scan_t2i":  # ranks from the matrix `kgitm predict` saved, which holds the same score
        sims = np.load(runs / "runs" / name / "sims_test.npy")
        assert expl["ranks"]["source"] == "saved similarity matrix"
        assert expl["score"] == pytest.approx(float(sims[2, 11]), abs=1e-5)


def test_explain_a_free_text_and_an_image_file(runs, tmp_path, monkeypatch, capsys):
    import matplotlib.pyplot as plt

    monkeypatch.chdir(runs)
    images = tmp_path / "images"
    images.mkdir()
    ids = (runs / "tiny" / "test_ids.txt").read_text().split()
    plt.imsave(images / f"{ids[4]}.png", np.random.default_rng(0).random((60, 80, 3)))
    out = tmp_path / "free.png"
    assert main(["explain", str(runs / "runs" / "gsmn_sparse"), "--image", "4", "--text", "a man riding a horse",
                 "--image-dir", str(images), "--out", str(out)]) in (None, 0)
    _check_png(out)
    expl = json.loads(out.with_suffix(".json").read_text())
    assert expl["caption"] is None and expl["words"] == ["a", "man", "riding", "a", "horse"]
    assert expl["image_file"].endswith(f"{ids[4]}.png") and expl["ranks"]["num_captions"] == 81
    with pytest.raises(SystemExit) as exit_:
        main(["explain", str(runs / "runs" / "gsmn_sparse"), "--image", "99", "--out", str(out)])
    assert exit_.value.code == 2 and "outside the test split" in capsys.readouterr().err


def _check_page(page: Path, names: list[str]) -> str:
    text = page.read_text(encoding="utf-8")
    assert 'id="metrics"' in text and text.count("data:image/png;base64,") >= 3
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained
    for name in names:
        assert f"<h2>{name}</h2>" in text
    return text


@pytest.mark.parametrize("name", list(RUNS))
def test_report_of_every_matcher(runs, name, tmp_path, monkeypatch):
    monkeypatch.chdir(runs)
    page = tmp_path / f"{name}.html"
    pictures = "1" if name in ("scan_t2i", "sgm") else "-1"
    assert main(["report", str(runs / "runs" / name), "--out", str(page), "--queries", "3", "--failure-pictures", pictures]) in (None, 0)
    text = _check_page(page, [name])
    assert text.count('class="query"') == 6  # 3 sampled queries each way, each with its top-5
    if name == "scan_t2i":  # tested: every protocol's metrics and the diagnostics come from its results
        assert "relation_swap_acc" in text and "sims_test.npy" in text
        # the failures the report finds are the ones `kgitm test` counted (the same pairs, scored alike)
        from kgitm.viz.report import run_report

        results = json.loads((runs / "runs" / name / "results_test.json").read_text())["results"]
        found = run_report(runs / "runs" / name, failure_pictures=0).failures
        for diagnostic in ("relation_swap", "attribute_swap"):
            pairs = sum(found[diagnostic]["totals"].values())
            wrong = sum(len(v) for v in found[diagnostic]["wrong"].values())
            assert 100.0 * (pairs - wrong) / pairs == pytest.approx(results[f"{diagnostic}_acc"])
    if pictures == "1":
        assert "relation-swap:" in text and 'class="explain"' in text


def test_comparison_page_renders_in_a_headless_browser(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(runs)
    page = tmp_path / "compare.html"
    names = ["scan_t2i", "gsmn_sparse", "sgm"]
    assert main(["report", *(str(runs / "runs" / n) for n in names), "--out", str(page), "--queries", "2",
                 "--failure-pictures", "1"]) in (None, 0)
    text = _check_page(page, names)
    assert text.count("<tr><td class=\"l\">") >= 3  # one metrics row per run

    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless browser to render the page: `apt-get install -y chromium` (Debian) enables this check")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    shot = tmp_path / "compare.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1400,2000", page.as_uri()], check=True, timeout=120,
                   capture_output=True)
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1400)
    assert (pixels.mean(-1) < 0.9).mean() > 0.02, "the screenshot is (nearly) blank"
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], check=True, timeout=120, capture_output=True, text=True).stdout
    for element in ('id="metrics"', 'id="diagnostics"', 'class="run"', 'class="explain"', "R@K curves"):
        assert element in dom, element
    assert dom.count('<img class="plot"') == 3


@pytest.mark.parametrize("name", [n for n in ("gsmn_sparse", "sgm", "scan_consensus") if n in RUNS])
def test_the_light_loader_explains_like_the_lightning_one(runs, name, monkeypatch):
    """``kgitm explain`` loads a run without Lightning (:func:`kgitm.models.run.load_run_model`); the model,
    the pair's batch and so every alignment are the ones of the Lightning path (:func:`kgitm.cli.runs.open_run`)."""
    from kgitm.cli.runs import open_run
    from kgitm.models.explain import explain_pair
    from kgitm.models.run import load_run_model

    monkeypatch.chdir(runs)
    run = runs / "runs" / name
    model, data = load_run_model(run)
    task, dm = open_run(run)
    light = explain_pair(model, data, split="test", image=5, caption=27)
    heavy = explain_pair(task.model, dm, split="test", image=5, caption=27)
    assert light["words"] == heavy["words"] and light["ranks"] == heavy["ranks"]
    assert light["alignments"].keys() == heavy["alignments"].keys()
    for key, value in heavy["alignments"].items():
        assert torch.equal(torch.tensor(light["alignments"][key]), torch.tensor(value)), key


@pytest.mark.parametrize("name", ["vsepp", "scan_t2i"])
def test_swap_margin_probe_against_the_full_similarity(runs, name, tmp_path, monkeypatch, capsys):
    """``scripts/probe_swap_margins.py`` on a trained run: its pair scores are entries of the exact
    block-wise similarity of the swap set's captions against every image, on the pair's own image and on
    the reassigned other image; the JSON holds every swap set of the test split."""
    import importlib.util

    from kgitm.cli.runs import encode_test, open_run
    from kgitm.eval.metrics import pairwise_accuracy

    spec = importlib.util.spec_from_file_location("probe_swap_margins", REPO / "scripts/probe_swap_margins.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    monkeypatch.chdir(runs)
    run = runs / "runs" / name
    out = tmp_path / "margins.json"
    assert probe.main([str(run), "--seed", "3", "--output", str(out)]) == 0
    rows = json.loads(out.read_text())["runs"][str(run)]

    task, dm = open_run(run)
    images = encode_test(task, dm).images
    sets = {k: v for k, v in dm.diagnostic_loaders().items() if v["kind"] == "pairs"}
    assert set(rows) == set(sets) and {"relation_swap", "attribute_swap"} <= set(rows)
    for key, spec_ in sets.items():
        index, pos = task.model.encode_caption_set(spec_["positive"])
        _, neg = task.model.encode_caption_set(spec_["negative"])
        full_pos, full_neg = task.model.similarity(images, pos).numpy(), task.model.similarity(images, neg).numpy()
        cols = np.arange(len(index))
        own = index.numpy()
        other = probe.other_images(own, 3)
        r = rows[key]
        assert r["pairs"] == len(index)
        assert r["accuracy"] == pytest.approx(pairwise_accuracy(full_pos[own, cols], full_neg[own, cols]))
        assert r["other_image"] == pytest.approx(pairwise_accuracy(full_pos[other, cols], full_neg[other, cols]))
        m = full_pos[own, cols] - full_neg[own, cols]
        assert r["margin_median"] == pytest.approx(float(np.median(m)), abs=1e-5)
        assert r["margin_min"] <= r["margin_p5"] <= r["margin_median"] and 0 < r["at_max"] <= 100
    assert name in capsys.readouterr().out
