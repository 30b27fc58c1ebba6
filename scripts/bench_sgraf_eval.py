"""Benchmark: the exact SGRAF (SAF, SGR) similarity matrix, vectorised blocks vs a per-caption loop.

Times :func:`kgitm.eval.similarity.compute_similarity` with :class:`~kgitm.matchers.sgraf.SGRAFMatcher`
(blocks of image x caption pairs sized from a memory budget) against a loop written like the public
code (SGRAF's ``shard_attn_scores`` + ``EncoderSimilarity.forward``: image shards x caption shards of
``--shard`` items, inside each a Python loop over its captions, each against all images of the shard
at once; ``scripts/public_style.py``'s ``loop_sgraf``), with the same weights, and reports both times,
their ratio, the largest absolute difference of the scores and the peak resident memory. When the loop
would take too long it runs on the first ``--loop-captions`` captions and its full time is
extrapolated (flagged in the table and the JSON).

Defaults are Flickr30K test scale: 1,000 images x 5,000 captions, 36 regions, D = 1024, sim_dim 256,
captions of 8-16 words, random l2-normalised inputs and the release's initialisation. Examples::

    python scripts/bench_sgraf_eval.py --images 20 --captions 100                  # a check, seconds
    python scripts/bench_sgraf_eval.py --device cuda --loop-captions -1 --output sgraf_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kgitm.eval.similarity import compute_similarity, last_level_cache_mb, plan_blocks  # noqa: E402
from kgitm.matchers.sgraf import SGRAFMatcher  # noqa: E402
from bench_similarity import PeakRSS, fix_malloc_thresholds, random_inputs, sync  # noqa: E402 - scripts/
from public_style import loop_sgraf  # noqa: E402 - scripts/public_style.py

METHODS = ("sgraf_saf", "sgraf_sgr")


def make_matcher(name: str, args: argparse.Namespace) -> SGRAFMatcher:
    torch.manual_seed(args.seed)
    module = {"sgraf_saf": "SAF", "sgraf_sgr": "SGR"}.get(name)
    if module is None:
        raise SystemExit(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return SGRAFMatcher(module, embed_dim=args.dim, sim_dim=args.sim_dim, sgr_step=args.sgr_step,
                        num_regions=max(36, args.regions))


def bench_method(name: str, images, captions, args: argparse.Namespace, device: torch.device) -> dict:
    matcher = make_matcher(name, args).to(device).eval()
    n, m = len(images), len(captions)
    pair_bytes = matcher.pair_memory_bytes(images, captions)
    budget = args.memory_budget_mb
    if device.type == "cpu":
        budget = min(budget, last_level_cache_mb() if args.cpu_block_mb is None else args.cpu_block_mb)
    ib, cb = plan_blocks(pair_bytes, n, m, memory_budget_mb=budget)
    if device.type == "cuda":  # context, kernels and library handles load outside the timed region
        compute_similarity(matcher, images.index(slice(0, 64)), captions.index(slice(0, 256)),
                           memory_budget_mb=args.memory_budget_mb, device=device)
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        sims = compute_similarity(matcher, images, captions, memory_budget_mb=args.memory_budget_mb,
                                  cpu_block_mb=args.cpu_block_mb, progress=args.progress, device=device)
        sync(device)
        vec_time = time.perf_counter() - t0
    row = {
        "method": name,
        "vectorised_s": vec_time,
        "pairs_per_s": n * m / vec_time,
        "image_block": ib,
        "caption_block": cb,
        "pair_memory_bytes_estimate": pair_bytes,
        "peak_rss_mb": rss.peak / 2**20,
        "peak_rss_increase_mb": (rss.peak - rss.start) / 2**20,
    }
    if device.type == "cuda":
        row["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20

    loop_m = m if args.loop_captions is None else min(m, args.loop_captions)
    if loop_m > 0:
        img_dev, cap_dev = images.to(device), captions.index(slice(0, loop_m)).to(device)
        sync(device)
        with torch.inference_mode():
            t0 = time.perf_counter()
            loop_sims = loop_sgraf(matcher, img_dev, cap_dev, range(0, loop_m), args.shard).float().cpu()
            sync(device)
            loop_time = time.perf_counter() - t0
        full_loop = loop_time * m / loop_m
        row.update(
            loop_captions=loop_m,
            loop_measured_s=loop_time,
            loop_full_s=full_loop,
            loop_extrapolated=loop_m < m,
            speedup=full_loop / vec_time,
            max_abs_diff=float((loop_sims - sims[:, :loop_m]).abs().max()),
        )
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1000, help="number of images (default: Flickr30K test, 1000)")
    p.add_argument("--captions", type=int, default=5000, help="number of captions (default 5000)")
    p.add_argument("--regions", type=int, default=36, help="regions per image R (default 36)")
    p.add_argument("--dim", type=int, default=1024, help="embedding size D (default 1024)")
    p.add_argument("--sim-dim", type=int, default=256, help="similarity vector size (default 256)")
    p.add_argument("--sgr-step", type=int, default=3, help="SGR reasoning steps (default 3)")
    p.add_argument("--min-words", type=int, default=8, help="shortest caption (default 8)")
    p.add_argument("--max-words", type=int, default=16, help="longest caption, the padded length L (default 16)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--memory-budget-mb", type=float, default=1024.0, help="activation budget of one block (MiB)")
    p.add_argument("--cpu-block-mb", type=float, default=None,
                   help="on the CPU, the largest block in MiB (default: the last-level cache size)")
    p.add_argument("--loop-captions", type=int, default=256,
                   help="captions the per-caption loop runs on; its full time is extrapolated (default 256; "
                        "-1 runs all captions, 0 skips the loop)")
    p.add_argument("--shard", type=int, default=128, help="image and caption shard size of the loop (default 128)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all usable cores)")
    p.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="show a progress bar per method")
    p.add_argument("--fixed-malloc", action="store_true", help="fix glibc's mmap/trim thresholds (stable page-fault costs)")
    args = p.parse_args(argv)
    if args.fixed_malloc:
        fix_malloc_thresholds()
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for but CUDA is not available")
    device = torch.device(args.device)
    args.loop_captions = None if args.loop_captions < 0 else args.loop_captions
    images, captions, source = random_inputs(args)
    n, m, l = len(images), len(captions), captions.features.shape[1]

    load_before = os.getloadavg()
    rows = [bench_method(s.strip(), images, captions, args, device) for s in args.methods.split(",") if s.strip()]
    load_after = os.getloadavg()

    print(f"inputs {source}: {n} images x {m} captions, R={args.regions}, L<={l}, D={args.dim}, sim_dim={args.sim_dim}; "
          f"device {device}, {threads} threads; block budget {args.memory_budget_mb:g} MiB; "
          f"load average before/after {load_before[0]:.2f}/{load_after[0]:.2f} on {os.cpu_count()} cores")
    print(" | ".join(("method", "vectorised s", "blocks", "peak RSS MB", "loop s (full)", "ratio loop/vectorised", "max |diff|")))
    for row in rows:
        loop = "-"
        if "loop_full_s" in row:
            mark = "*" if row["loop_extrapolated"] else ""
            loop = f"{row['loop_full_s']:.2f}{mark} ({row['loop_captions']} caps: {row['loop_measured_s']:.2f})"
        print(" | ".join([
            row["method"], f"{row['vectorised_s']:.2f}", f"{row['image_block']}x{row['caption_block']}",
            f"{row['peak_rss_mb']:.0f}", loop, f"{row['speedup']:.1f}x" if "speedup" in row else "-",
            f"{row['max_abs_diff']:.2e}" if "max_abs_diff" in row else "-",
        ]))
    if any(row.get("loop_extrapolated") for row in rows):
        print(f"* loop time extrapolated linearly from the first {args.loop_captions} captions to all {m}")
    if args.output is not None:
        result = {
            "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "threads": threads},
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                        "device": str(device),
                        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                        "load_average_before": load_before, "load_average_after": load_after},
            "results": rows,
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
