"""Probe: does a trained matcher use box geometry to tell a relation's direction?

For the relation-swap diagnostic set of the test split (SynthScenes writes it:
``diagnostics/test_relation_swap.jsonl``, one true caption and its subject/object-swapped twin per
image), reports per predicate and overall:

- ``swap``: percent of pairs where the true caption outscores its swap on the image (the grid's
  ``relation_swap_acc``);
- ``rotated``: percent of pairs where the true caption scores higher on its own image than on the
  same image with the boxes rotated by 180 degrees (:func:`kgitm.core.geometry.rotate_boxes`;
  every directional relation is false there, the region features are unchanged). A matcher that
  ignores boxes ties every pair (``rotated_ties``) and scores 0; one that uses directions the
  caption states scores near 100;
- ``rotation_effect``: mean ``|S(I, c) - S(rot(I), c)|`` over the pairs, next to the spread (sd)
  of ``S(I, c)``, to size how much the boxes move the score at all.

``--fit-rotation N`` then trains a copy of the model for ``N`` steps on the rotated-image hinge
alone (``[m - S(I, c) + S(rot(I), c)]_+`` over training captions with a swappable relation) and
probes again: training-batch accuracy against held-out test accuracy separates a rule the matcher
can learn from layouts it memorises.

Example (a run written by ``kgitm grid``)::

    python scripts/probe_relation_geometry.py runs/grid/gsmn_geometry_synthscenes/gsmn_sparse__swap_spatial/seed0 \\
        --fit-rotation 2000 --output probe.json

Arguments after ``--`` go to the Lightning CLI parser of the run's config.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kgitm.cli.runs import RunLoadError, encode_test, load_run  # noqa: E402
from kgitm.core.io import atomic_write_json as write_json  # noqa: E402
from kgitm.core.types import rotated_images  # noqa: E402
from kgitm.eval.metrics import pairwise_accuracy  # noqa: E402
from kgitm.models.losses import RotatedImageHinge  # noqa: E402
from kgitm.models.matching import BatchOutput  # noqa: E402


@torch.no_grad()
def probe(model, dm) -> dict:
    """Per-predicate swap and rotation accuracies on the test split's relation-swap pairs."""
    images = encode_test(model, dm).images
    if images.boxes is None:
        raise SystemExit("probe_relation_geometry: the run's images have no boxes; set data.require_boxes true")
    diag = dm.diagnostic_loaders().get("relation_swap")
    path = Path(dm.root) / "diagnostics" / f"{dm.hparams.test_split}_relation_swap.jsonl"
    if diag is None:
        raise SystemExit(f"probe_relation_geometry: {path}: no relation-swap pairs; generate SynthScenes with `kgitm synthscenes`")
    index, pos = model.model.encode_caption_set(diag["positive"])
    _, neg = model.model.encode_caption_set(diag["negative"])
    s_pos = model.model.pair_scores(images, index, pos)
    s_neg = model.model.pair_scores(images, index, neg)
    s_rot = model.model.pair_scores(rotated_images(images), index, pos)
    predicates = [json.loads(line)["triple"][1] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    groups: dict[str, list[int]] = defaultdict(list)
    for p, name in enumerate(predicates):
        groups[name].append(p)
    groups = dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))
    groups["all"] = list(range(len(predicates)))
    rows = {}
    for name, idx in groups.items():
        rows[name] = {
            "pairs": len(idx),
            "swap": pairwise_accuracy(s_pos[idx], s_neg[idx]),
            "rotated": pairwise_accuracy(s_pos[idx], s_rot[idx]),
            "rotated_ties": float(100 * np.mean(s_pos[idx] == s_rot[idx])),
        }
    rows["all"]["rotation_effect"] = float(np.abs(s_pos - s_rot).mean())
    rows["all"]["score_sd"] = float(s_pos.std())
    return rows


def fit_rotation(model, dm, steps: int, lr: float, pairs: int, log_every: int) -> dict:
    """Train all parameters on the rotated-image hinge alone; returns the training-batch curve."""
    model.train()
    term = RotatedImageHinge(pairs=pairs, margin=model.term("retrieval").margin)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    curve, window, it = [], [], iter(dm.train_dataloader())
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(dm.train_dataloader())
            batch = next(it)
        out = BatchOutput(model.model.encode_images(batch.images), model.model.encode_captions(batch.captions), None)
        scores = term.scores(model.model, batch, out)
        if scores is None:
            continue
        upright, rotated = scores
        loss = (term.margin - upright + rotated).clamp_min(0).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        window.append((loss.item(), (upright > rotated).float().mean().item()))
        if (step % log_every == 0 or step == steps) and window:
            hinge, acc = (float(np.mean(v)) for v in zip(*window))
            curve.append({"step": step, "hinge": hinge, "train_rotated": 100 * acc, "seconds": time.perf_counter() - t0})
            print(f"  step {step:5d}  hinge {hinge:.4f}  training-batch rotated accuracy {100 * acc:5.1f}%", flush=True)
            window = []
    model.eval()
    return {"steps": steps, "lr": lr, "pairs_per_batch": pairs, "curve": curve}


def _table(title: str, rows: dict) -> str:
    lines = [title, f"{'predicate':14s} {'pairs':>5s} {'swap':>6s} {'rotated':>8s} {'ties':>6s}"]
    for name, r in rows.items():
        lines.append(f"{name:14s} {r['pairs']:5d} {r['swap']:6.1f} {r['rotated']:8.1f} {r['rotated_ties']:6.1f}")
    a = rows["all"]
    lines.append(f"rotation effect: mean |S(I,c) - S(rot I,c)| = {a['rotation_effect']:.4f} (score sd {a['score_sd']:.4f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="run folder with config.yaml and checkpoints/ (as kgitm grid writes them)")
    ap.add_argument("--checkpoint", default="best", help="checkpoint name under RUN/checkpoints (default: best)")
    ap.add_argument("--fit-rotation", type=int, default=0, metavar="N",
                    help="then train N steps on the rotated-image hinge alone and probe again (default 0: off)")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of --fit-rotation (default 3e-3)")
    ap.add_argument("--pairs", type=int, default=32, help="at most this many captions with a swappable relation per batch in the --fit-rotation hinge (default 32)")
    ap.add_argument("--log-every", type=int, default=250, help="steps between --fit-rotation progress lines (default 250)")
    ap.add_argument("--seed", type=int, default=0, help="seed of --fit-rotation's batches (default 0)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = args.run / "config.yaml"
    ckpt = args.run / "checkpoints" / f"{args.checkpoint}.ckpt"
    if args.fit_rotation:  # the training batches must mark the captions with a swappable relation
        extra = ["--data.relation_swap_negatives", "true", *extra]
    try:
        model, dm = load_run(config, ckpt, extra)
    except RunLoadError as err:
        raise SystemExit(f"probe_relation_geometry: {err}") from None
    dm.setup("fit")
    result = {
        "run": str(args.run), "checkpoint": str(ckpt), "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "trained": probe(model, dm),
    }
    print(_table(f"{args.run} ({args.checkpoint}): test relation-swap pairs, accuracy in %", result["trained"]))
    if args.fit_rotation:
        torch.manual_seed(args.seed)
        tuned = copy.deepcopy(model)
        print(f"fitting the rotated-image hinge alone for {args.fit_rotation} steps (lr {args.lr}):")
        result["fit_rotation"] = fit_rotation(tuned, dm, args.fit_rotation, args.lr, args.pairs, args.log_every)
        result["after_fit_rotation"] = probe(tuned, dm)
        print(_table("after --fit-rotation: test relation-swap pairs, accuracy in %", result["after_fit_rotation"]))
    if args.output:
        write_json(args.output, result)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
