"""Probe: is a matcher's swap accuracy real? Margins, ties, saturation and an other-image control.

The swap diagnostics (relation swap, attribute swap; ``diagnostics/{split}_*_swap.jsonl``, one true caption
and its perturbed twin per image) count a pair as right when the true caption scores strictly higher on
its image (``kgitm.eval.metrics.pairwise_accuracy``; a tie is a failure). A score of 100 can still be an
artefact: a margin at the last float bit, scores pinned at a bound, or a text prior that prefers the true
caption whatever the image shows. For each run and each pair set of the test split this reports:

- ``accuracy`` (the grid's ``*_swap_acc``), ``ties`` (percent of pairs with equal scores);
- the margin ``S(I, c) - S(I, c')``: its minimum, 5th percentile and median, and the median divided by
  the standard deviation of ``S(I, c)`` over the pairs (``median_margin_sd``: how large the margins are
  next to the spread of the scores);
- ``at_max``: percent of scores within ``1e-4`` of the largest score of the set (a saturated output,
  e.g. SGRAF's sigmoid, would pile up there);
- ``other_image``: the same comparison with both captions scored on another image of the split (a
  fixed random reassignment in which no pair keeps its image): a model that reads the image should fall to about 50 there; a model whose
  preference comes from the captions alone keeps its accuracy.

Examples (runs written by ``kgitm grid``)::

    python scripts/probe_swap_margins.py runs/grid/model_family_synthscenes/sgraf_saf_warmup1/seed0 \\
        runs/grid/matchers_synthscenes/scan_t2i/seed0 --output swap_margins.json
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kgitm.cli.runs import RunLoadError, encode_test, open_run  # noqa: E402
from kgitm.core.io import atomic_write_json  # noqa: E402
from kgitm.eval.metrics import pairwise_accuracy  # noqa: E402

#: a score this close to the set's largest counts as at the maximum (``at_max``)
AT_MAX_TOLERANCE = 1e-4


def other_images(index: np.ndarray, seed: int) -> np.ndarray:
    """The pairs' images reassigned by a random permutation of the pairs such that no pair keeps its own
    image (``out[i] != index[i]`` for every ``i``; with one pair per image, a derangement)."""
    index = np.asarray(index)
    if len(np.unique(index)) < 2:
        raise ValueError("other_images: the pairs need at least two different images")
    rng = np.random.default_rng(seed)
    while True:
        out = index[rng.permutation(len(index))]
        if not np.any(out == index):
            return out


def margins(pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    m = pos - neg
    both = np.concatenate([pos, neg])
    sd = float(pos.std())
    return {
        "pairs": int(len(pos)),
        "accuracy": pairwise_accuracy(pos, neg),
        "ties": float(100 * np.mean(pos == neg)),
        "margin_min": float(m.min()),
        "margin_p5": float(np.percentile(m, 5)),
        "margin_median": float(np.median(m)),
        "score_sd": sd,
        "median_margin_sd": float(np.median(m) / sd) if sd > 0 else float("nan"),
        "at_max": float(100 * np.mean(both >= both.max() - AT_MAX_TOLERANCE)),
    }


@torch.no_grad()
def probe(run: Path, seed: int) -> dict[str, dict[str, float]]:
    task, dm = open_run(run)
    images = encode_test(task, dm).images
    out = {}
    for name, spec in dm.diagnostic_loaders().items():
        if spec["kind"] != "pairs":
            continue
        index, pos = task.model.encode_caption_set(spec["positive"])
        _, neg = task.model.encode_caption_set(spec["negative"])
        s_pos = task.model.pair_scores(images, index, pos)
        s_neg = task.model.pair_scores(images, index, neg)
        other = torch.from_numpy(other_images(index.numpy(), seed)).to(index.dtype)
        o_pos = task.model.pair_scores(images, other, pos)
        o_neg = task.model.pair_scores(images, other, neg)
        row = margins(s_pos, s_neg)
        row["other_image"] = pairwise_accuracy(o_pos, o_neg)
        out[name] = row
    if not out:
        raise SystemExit(f"probe_swap_margins: {run}: the test split has no swap sets; generate SynthScenes with `kgitm synthscenes`")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="run folders (config, checkpoints/, vocab.txt; as kgitm grid writes them)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the other-image reassignment (default 0)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    cols = ("pairs", "accuracy", "ties", "margin_min", "margin_p5", "margin_median", "median_margin_sd", "at_max", "other_image")
    print(f"{'run / set':60s} " + " ".join(f"{c:>16s}" for c in cols))
    for run in args.runs:
        try:
            rows = probe(run, args.seed)
        except RunLoadError as err:
            print(f"probe_swap_margins: error: {err}", file=sys.stderr)
            return 2
        results[str(run)] = rows
        for name, r in rows.items():
            print(f"{str(run)[-44:] + ' ' + name:60s} " + " ".join(
                f"{r[c]:16d}" if isinstance(r[c], int) else f"{r[c]:16.4g}" for c in cols))
    if args.output:
        atomic_write_json(args.output, {
            "command": "python scripts/probe_swap_margins.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "derangement_seed": args.seed, "at_max_tolerance": AT_MAX_TOLERANCE, "runs": results,
        })
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
