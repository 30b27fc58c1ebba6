"""Benchmark: two-stage retrieval (VSE++ shortlist + expensive re-ranking) against exhaustive scoring.

Loads a coarse model (a global-embedding VSE++ run) and an expensive one (SCAN, GSMN, SGM) from
their configs and checkpoints, encodes the test split with both (MatchingModule's own evaluation
encoding path), and compares:

- exhaustive: the expensive matcher on every image-caption pair (timed);
- coarse: the VSE++ matrix alone (timed);
- two-stage for each ``k`` in ``--ks``: the expensive matcher re-scores the top ``k`` images of
  every caption (text-to-image) and the top ``round(k * --caption-scale)`` captions of every image
  (image-to-text) of the coarse ranking (:mod:`kgitm.eval.two_stage`), and every scored pair serves
  both directions (``--no-share`` turns that off); time = coarse matrices + shortlists + re-ranking.

``--coarse`` may be given several times: the coarse matrix is then the mean of the coarse models'
matrices (:func:`kgitm.eval.ensemble.average_similarity`, the ensemble command's mean). Global
embeddings are cheap, and models that disagree miss different true items, so their mean shortlists
better than any one of them.

The table gives, per ``k``: distinct pairs the matcher scored, pairs it evaluated (with
``--image-block > 1`` some block fill is scored and discarded), the reduction factor
``exhaustive pairs / evaluated pairs``, RSUM, RSUM minus the exhaustive RSUM, and time. The issue's
goal is at least ``--min-reduction`` (10x) fewer matcher evaluations with RSUM within
``--rsum-tolerance`` (1 point) of exhaustive; the script reports the smallest ``k`` with
``|RSUM - exhaustive| <= tolerance`` and the smallest with ``RSUM >= exhaustive - tolerance`` (a
shortlist can also *raise* RSUM: the coarse model filters some of the matcher's false positives),
each with whether it reaches the reduction; ``goal_met`` in the JSON uses the second.

``--coarse-weight W`` scores each shortlisted pair by ``(1 - W) * expensive + W * coarse``
(:func:`kgitm.eval.two_stage.two_stage_similarity`): an ensemble of the two models computed on the
shortlist only. Its fair baseline is then the same ensemble on every pair (``kgitm ensemble``'s weighted
mean of the two whole matrices), reported beside exhaustive as ``ensemble`` with each row's RSUM
minus it; rows that use a weight combine two models and must say so wherever they are reported.

Protocol: the whole test matrix ("single", Flickr30K / SynthScenes). Encoding time is reported
apart (both ways need the expensive encoders).

Example (arguments after ``--`` go to both models' Lightning CLI parsers)::

    python scripts/bench_two_stage.py \\
        --coarse configs/experiment/vsepp_synthscenes.yaml runs/vsepp/best.ckpt \\
        --expensive configs/experiment/scan_t2i_synthscenes.yaml runs/scan_t2i/best.ckpt \\
        --ks 5 10 20 50 --output bench_two_stage.json -- --data.root data/synthscenes
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kgitm.eval.ensemble import average_similarity  # noqa: E402
from kgitm.eval.metrics import evaluate_retrieval  # noqa: E402
from kgitm.core.io import atomic_write_json as write_json  # noqa: E402
from kgitm.eval.similarity import compute_similarity  # noqa: E402
from kgitm.eval.two_stage import scores_metrics, two_stage_similarity  # noqa: E402
from kgitm.cli.runs import RunLoadError, encode_test, load_run  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coarse", nargs=2, required=True, action="append", metavar=("CONFIG", "CKPT"),
                   help="a fast global-embedding run (VSE++); repeat it to shortlist with the mean of several")
    p.add_argument("--expensive", nargs=2, required=True, metavar=("CONFIG", "CKPT"), help="the expensive matcher run (SCAN, GSMN, SGM)")
    p.add_argument("--ks", nargs="+", type=int, default=[5, 10, 20, 50], metavar="K", help="shortlist lengths: captions per image and images per caption (default: 5 10 20 50)")
    p.add_argument("--caption-scale", type=float, default=1.0, metavar="S",
                   help="captions re-ranked per image = round(S x k), at least 1 (default 1)")
    p.add_argument("--no-share", action="store_true",
                   help="re-rank each direction over its own shortlist only (default: every scored pair serves both)")
    p.add_argument("--image-block", type=int, default=1, metavar="B", help="images per re-ranking call (default 1: exactly the candidate pairs are scored)")
    p.add_argument("--coarse-weight", type=float, default=0.0, metavar="W",
                   help="score re-ranked pairs by (1 - W) x expensive + W x coarse, an ensemble on the shortlist (default 0: expensive alone)")
    p.add_argument("--rsum-tolerance", type=float, default=1.0, help="RSUM criterion: |RSUM - exhaustive RSUM| <= this (default: 1.0)")
    p.add_argument("--min-reduction", type=float, default=10.0, help="reduction goal in matcher evaluations (default: 10)")
    p.add_argument("--memory-budget-mb", type=float, default=1024.0, help="activation budget of one matcher block (default: 1024)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device of both models (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (set it when timing on a shared machine)")
    p.add_argument("--output", type=Path, default=None, metavar="BENCH.json", help="write the results as JSON (atomically)")
    return p


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    if any(k < 1 for k in args.ks):
        raise SystemExit(f"bench_two_stage: --ks must be positive, got {args.ks}")
    if not 0.0 <= args.coarse_weight <= 1.0:
        raise SystemExit(f"bench_two_stage: --coarse-weight must lie in [0, 1], got {args.coarse_weight}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    try:
        coarse_runs = [load_run(*run, extra, device) for run in args.coarse]
        expensive, expensive_dm = load_run(*args.expensive, extra, device)
    except RunLoadError as err:
        raise SystemExit(f"bench_two_stage: {err}") from None
    k = int(expensive_dm.hparams.captions_per_image)
    for (_, coarse_dm), (config, _) in zip(coarse_runs, args.coarse):
        if (coarse_dm.root, coarse_dm.hparams.test_split) != (expensive_dm.root, expensive_dm.hparams.test_split):
            raise SystemExit(
                f"bench_two_stage: {config} reads other test data ({coarse_dm.root}/{coarse_dm.hparams.test_split} vs "
                f"{expensive_dm.root}/{expensive_dm.hparams.test_split}); point all runs at the same --data.root"
            )

    coarse_enc, coarse_encode_s = _timed(
        lambda: [(e.images, e.captions) for e in (encode_test(model, dm, device) for model, dm in coarse_runs)], device
    )
    expensive_split, expensive_encode_s = _timed(lambda: encode_test(expensive, expensive_dm, device), device)
    e_img, e_cap = expensive_split.images, expensive_split.captions
    n, m = len(e_img), len(e_cap)
    for (c_img, c_cap), (config, _) in zip(coarse_enc, args.coarse):
        if (len(c_img), len(c_cap)) != (n, m):
            raise SystemExit(f"bench_two_stage: {config} encodes {len(c_img)}x{len(c_cap)}, expensive {n}x{m}; use the same test split")

    budget = args.memory_budget_mb
    # the model's scorer: its matcher, fused with a knowledge consensus when it has one
    expensive_matcher = expensive.model.scorer
    exhaustive_sims, exhaustive_s = _timed(
        lambda: compute_similarity(expensive_matcher, e_img, e_cap, memory_budget_mb=budget), device
    )
    exhaustive = evaluate_retrieval(exhaustive_sims.numpy(), k)
    def coarse_matrix() -> torch.Tensor:
        sims = [
            compute_similarity(model.model.scorer, c_img, c_cap, memory_budget_mb=budget).numpy()
            for (model, _), (c_img, c_cap) in zip(coarse_runs, coarse_enc)
        ]
        return torch.from_numpy(sims[0] if len(sims) == 1 else average_similarity(sims))

    coarse_sims, coarse_s = _timed(coarse_matrix, device)
    coarse_res = evaluate_retrieval(coarse_sims.numpy(), k)
    w = args.coarse_weight
    ensemble = None  # the same combination on every pair: the fair baseline of a weighted two-stage
    if w > 0:
        ensemble = evaluate_retrieval(
            average_similarity([exhaustive_sims.numpy().astype("float64"), coarse_sims.numpy().astype("float64")], [1 - w, w]), k
        )

    def rerank(image_idx: torch.Tensor, caption_idx: torch.Tensor) -> torch.Tensor:
        return compute_similarity(expensive_matcher, e_img.index(image_idx), e_cap.index(caption_idx), memory_budget_mb=budget)

    scale = args.caption_scale
    if scale <= 0:
        raise SystemExit(f"bench_two_stage: --caption-scale must be positive, got {scale}")

    def captions_per_image(kk: int) -> int:
        return max(1, round(kk * scale))

    rows = []
    for kk in args.ks:
        scores, rerank_s = _timed(
            lambda: two_stage_similarity(
                coarse_sims,
                rerank,
                k_images=kk,
                k_captions=captions_per_image(kk),
                image_block=args.image_block,
                share_candidates=not args.no_share,
                coarse_weight=w,
            ),
            device,
        )
        res = scores_metrics(scores, k)
        rows.append(
            {
                "k": kk,
                "k_images": min(kk, n),
                "k_captions": min(captions_per_image(kk), m),
                "matcher_pairs": scores.matcher_pairs,
                "scored_pairs": scores.scored_pairs,
                "exhaustive_pairs": n * m,
                "reduction": n * m / scores.scored_pairs,
                "rsum": res["rsum"],
                "rsum_diff": res["rsum"] - exhaustive["rsum"],
                **({"rsum_diff_ensemble": res["rsum"] - ensemble["rsum"]} if ensemble else {}),
                "time_s": coarse_s + rerank_s,
                "rerank_s": rerank_s,
                "results": res,
            }
        )

    tol = args.rsum_tolerance
    within = [r for r in rows if abs(r["rsum_diff"]) <= tol]  # |RSUM - exhaustive| <= tol
    no_worse = [r for r in rows if r["rsum_diff"] >= -tol]  # at most tol below exhaustive
    smallest = min(within, key=lambda r: r["k"]) if within else None
    smallest_no_worse = min(no_worse, key=lambda r: r["k"]) if no_worse else None
    goal = [r for r in no_worse if r["reduction"] >= args.min_reduction]

    title = (
        f"two-stage retrieval | {n} images x {m} captions | device {device} | threads {torch.get_num_threads()}\n"
        f"coarse {' + '.join(p for _, p in args.coarse)} (RSUM {coarse_res['rsum']:.2f}, {coarse_s:.3f} s) | expensive {args.expensive[0]} "
        f"(exhaustive RSUM {exhaustive['rsum']:.2f}, {exhaustive_s:.3f} s, {n * m} pairs)"
        + (f"\nre-ranked pairs scored (1 - {w:g}) x expensive + {w:g} x coarse; that ensemble on every pair: RSUM {ensemble['rsum']:.2f}"
           if ensemble else "")
    )
    header = f"{'k':>6} {'k capts':>8} {'matcher pairs':>14} {'scored pairs':>13} {'reduction':>10} {'RSUM':>8} {'dRSUM':>8} {'time s':>9} {'speedup':>8}"
    print(title)
    print(header)
    print("-" * len(header))
    print(f"{'all':>6} {'all':>8} {n * m:>14} {n * m:>13} {1.0:>9.1f}x {exhaustive['rsum']:>8.2f} {0.0:>8.2f} {exhaustive_s:>9.3f} {1.0:>7.2f}x")
    for r in rows:
        print(
            f"{r['k']:>6} {r['k_captions']:>8} {r['matcher_pairs']:>14} {r['scored_pairs']:>13} {r['reduction']:>9.1f}x {r['rsum']:>8.2f} "
            f"{r['rsum_diff']:>+8.2f} {r['time_s']:>9.3f} {exhaustive_s / r['time_s']:>7.2f}x"
        )
    print(f"encoding (not in the times above): coarse {coarse_encode_s:.3f} s, expensive {expensive_encode_s:.3f} s")
    for label, best in (("|dRSUM| <= ", smallest), ("dRSUM >= -", smallest_no_worse)):
        if best is None:
            print(f"no k in {args.ks} has {label}{tol:g}; try larger k")
        else:
            verdict = "meets" if best["reduction"] >= args.min_reduction else "misses"
            print(
                f"smallest k with {label}{tol:g}: k={best['k']} ({best['reduction']:.1f}x fewer matcher "
                f"evaluations than exhaustive: {verdict} the {args.min_reduction:g}x goal)"
            )

    if args.output is not None:
        write_json(
            args.output,
            {
                "coarse": {"runs": [{"config": c, "ckpt": p} for c, p in args.coarse], "results": coarse_res, "time_s": coarse_s, "encode_s": coarse_encode_s},
                "expensive": {
                    "config": args.expensive[0], "ckpt": args.expensive[1], "results": exhaustive,
                    "time_s": exhaustive_s, "encode_s": expensive_encode_s, "pairs": n * m,
                },
                "two_stage": rows,
                "coarse_weight": w,
                "ensemble": None if ensemble is None else {"weights": {"expensive": 1 - w, "coarse": w}, "results": ensemble},
                "num_images": n,
                "num_captions": m,
                "image_block": args.image_block,
                "caption_scale": scale,
                "share_candidates": not args.no_share,
                "rsum_tolerance": args.rsum_tolerance,
                "min_reduction": args.min_reduction,
                "smallest_k_within_tolerance": None if smallest is None else smallest["k"],
                "smallest_k_no_worse_than_tolerance": None if smallest_no_worse is None else smallest_no_worse["k"],
                "goal_met": bool(goal),
                "device": str(device),
                "threads": torch.get_num_threads(),
                "machine": platform.platform(),
                "cli_args": extra,
            },
        )
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
