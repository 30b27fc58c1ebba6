"""Benchmark: exact full similarity matrices of cross-attention matchers, vectorised vs per-caption loop.

Times :func:`kgitm.eval.similarity.compute_similarity` (blocks of image x caption pairs sized from a
memory budget) for SCAN t2i, SCAN i2t, GSMN sparse and GSMN dense (and, with ``--methods``, SGRAF's SAF
and SGR) against a loop written like the public code (SCAN's and GSMN's ``shard_xattn``, SGRAF's
``shard_attn_scores``: image shards of 128 x caption shards of 128, then
inside each shard a Python loop over its captions, each against all images of the shard at once), checks that both give the same numbers on the captions the loop covered, and records the peak
resident memory. When the loop would take too long it runs on the first ``--loop-captions``
captions and its full time is extrapolated (flagged as such in the table and the JSON).

Defaults are Flickr30K test scale: 1,000 images x 5,000 captions, 36 regions, 1024-d, captions of
8-16 words. Examples::

    python scripts/bench_similarity.py --scale-down 10 --output bench_small.json
    python scripts/bench_similarity.py --methods scan_t2i,scan_i2t --output bench_scan.json
    python scripts/bench_similarity.py --methods sgraf_saf,sgraf_sgr --output bench_sgraf.json
    python scripts/bench_similarity.py --npz inputs.npz --write-sims sims/ --methods scan_t2i,scan_i2t
    python scripts/bench_similarity.py --fixed-malloc     # stable page-fault costs for both sides
    python scripts/bench_similarity.py --device cuda      # on a GPU (scripts/gpu_check.sh runs it)
    python scripts/bench_similarity.py --device cuda --compare-precision high   # + TF32 products, diff vs fp32

``--npz`` reads ``images (N, R, D)``, ``captions (M, L, D)`` (zero-padded) and ``lengths (M,)``,
already encoded and l2-normalised; optional ``boxes (N, R, 4)`` (normalised corners) and
``adjacency (M, L, L)`` are used by GSMN, random ones are drawn otherwise. Every region is valid
(the precomputed-feature format has no region mask).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kgitm.core.cpu import last_level_cache_mb  # noqa: E402
from kgitm.eval.similarity import compute_similarity, plan_blocks  # noqa: E402
from kgitm.core.types import EncodedCaptions, EncodedImages  # noqa: E402
from kgitm.matchers.base import Matcher  # noqa: E402
from kgitm.matchers.gsmn import GSMNMatcher  # noqa: E402
from kgitm.matchers.scan import SCANMatcher  # noqa: E402
from kgitm.matchers.sgraf import SGRAFMatcher  # noqa: E402
from public_style import loop_gsmn, loop_scan, loop_sgraf  # noqa: E402 - scripts/public_style.py

#: what runs by default (the similarity goal's methods); SGRAF with --methods sgraf_saf,sgraf_sgr
DEFAULT_METHODS = ("scan_t2i", "scan_i2t", "gsmn_sparse", "gsmn_dense")
METHODS = (*DEFAULT_METHODS, "sgraf_saf", "sgraf_sgr")
#: the public-style loop of each matcher class
LOOPS = {SCANMatcher: loop_scan, GSMNMatcher: loop_gsmn, SGRAFMatcher: loop_sgraf}


# ------------------------------------------------------------------------------------------ inputs


def random_inputs(args: argparse.Namespace) -> tuple[EncodedImages, EncodedCaptions, str]:
    g = torch.Generator().manual_seed(args.seed)
    n, m, r, d, l = args.images, args.captions, args.regions, args.dim, args.max_words
    images = F.normalize(torch.randn(n, r, d, generator=g), dim=-1)
    captions = F.normalize(torch.randn(m, l, d, generator=g), dim=-1)
    lengths = torch.randint(args.min_words, args.max_words + 1, (m,), generator=g)
    mask = torch.arange(l)[None] < lengths[:, None]
    captions = captions * mask[..., None]
    boxes = random_boxes(n, r, g)
    adjacency = random_trees(lengths, l, g)
    return (
        EncodedImages(images, torch.ones(n, r, dtype=torch.bool), boxes),
        EncodedCaptions(captions, mask, adjacency),
        "random",
    )


def random_boxes(n: int, r: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, r, 2, generator=g) * 0.7
    wh = torch.rand(n, r, 2, generator=g) * 0.3 + 0.02
    return torch.cat([xy, xy + wh], -1)


def random_trees(lengths: torch.Tensor, l: int, g: torch.Generator) -> torch.Tensor:
    """A random dependency-like tree per caption: word ``j > 0`` hangs from a word before it."""
    m = lengths.shape[0]
    heads = (torch.rand(m, l, generator=g) * torch.arange(l)).long()  # head of j in [0, j)
    adj = torch.zeros(m, l, l, dtype=torch.bool)
    j = torch.arange(1, l)
    valid = j[None] < lengths[:, None]
    rows = torch.arange(m)[:, None].expand(-1, l - 1)
    adj[rows[valid], heads[:, 1:][valid], j.expand(m, -1)[valid]] = True
    return adj | adj.transpose(1, 2)


def npz_inputs(args: argparse.Namespace) -> tuple[EncodedImages, EncodedCaptions, str]:
    data = np.load(args.npz)
    images = torch.from_numpy(np.ascontiguousarray(data["images"], dtype=np.float32))
    captions = torch.from_numpy(np.ascontiguousarray(data["captions"], dtype=np.float32))
    lengths = torch.from_numpy(np.asarray(data["lengths"])).long()
    n, r, _ = images.shape
    m, l, _ = captions.shape
    if lengths.shape != (m,) or int(lengths.max()) > l or int(lengths.min()) < 1:
        raise SystemExit(f"{args.npz}: lengths must be (M,) = ({m},) with values in [1, {l}]")
    g = torch.Generator().manual_seed(args.seed)
    boxes = torch.from_numpy(data["boxes"]).float() if "boxes" in data else random_boxes(n, r, g)
    mask = torch.arange(l)[None] < lengths[:, None]
    adjacency = torch.from_numpy(data["adjacency"]).bool() if "adjacency" in data else random_trees(lengths, l, g)
    return (
        EncodedImages(images, torch.ones(n, r, dtype=torch.bool), boxes),
        EncodedCaptions(captions, mask, adjacency),
        str(args.npz),
    )


def make_matcher(name: str, seed: int, *, dim: int = 1024, regions: int = 36) -> Matcher:
    """The benchmarked matcher with the papers' settings (SGRAF: sim_dim 256, 3 SGR steps), bound to ``dim``."""
    torch.manual_seed(seed)
    if name == "scan_t2i":
        return SCANMatcher("t2i", lambda_softmax=9.0, aggregation="lse", lambda_lse=6.0)
    if name == "scan_i2t":
        return SCANMatcher("i2t", lambda_softmax=4.0, aggregation="lse", lambda_lse=5.0)
    if name == "gsmn_sparse":
        return GSMNMatcher("sparse")
    if name == "gsmn_dense":
        return GSMNMatcher("dense")
    if name in ("sgraf_saf", "sgraf_sgr"):
        return SGRAFMatcher(name[-3:].upper(), embed_dim=dim, num_regions=max(36, regions))
    raise SystemExit(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


# ------------------------------------------------------------------------------------------ timing


def fix_malloc_thresholds(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> None:
    """Fixes glibc's mmap and trim thresholds for this process (``mallopt``), as the environment
    variables ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` would. By default glibc adapts
    them to the process's history, so whether a fresh buffer of a few MiB costs new pages (page
    faults) differs from run to run; the per-caption loop allocates such buffers for every caption
    and its time swung up to 2x between otherwise equal runs. Fixed thresholds make both sides
    stable (and the loop faster)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or name is None:
        raise SystemExit("--fixed-malloc needs glibc (Linux)")
    libc = ctypes.CDLL(name)
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    if not (libc.mallopt(m_mmap_threshold, mmap_threshold) and libc.mallopt(m_trim_threshold, trim_threshold)):
        raise SystemExit("--fixed-malloc: mallopt refused the thresholds")


class PeakRSS:
    """Samples the resident set size of this process in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.005) -> None:
        self.proc, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_method(name, images, captions, args, device) -> tuple[dict, torch.Tensor]:
    matcher = make_matcher(name, args.seed, dim=args.dim, regions=args.regions).to(device).eval()
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
        sims = compute_similarity(
            matcher,
            images,
            captions,
            memory_budget_mb=args.memory_budget_mb,
            cpu_block_mb=args.cpu_block_mb,
            trim_padding=not args.no_trim,
            progress=args.progress,
            device=device,  # SCAN has no parameters to say where it runs
        )
        sync(device)
        vec_time = time.perf_counter() - t0
    row = {
        "method": name,
        "vectorised_s": vec_time,
        "pairs_per_s": n * m / vec_time,
        "image_block": ib,
        "caption_block": cb,
        "pair_memory_bytes_estimate": pair_bytes,
        "block_memory_estimate_mb": ib * cb * pair_bytes / 2**20,
        "peak_rss_mb": rss.peak / 2**20,
        "peak_rss_increase_mb": (rss.peak - rss.start) / 2**20,
    }
    if device.type == "cuda":
        row["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if args.compare_precision:
        row.update(precision_row(matcher, images, captions, sims, args, device))

    # the loop, on the first captions only when it would be too slow
    loop_m = m if args.loop_captions is None else min(m, args.loop_captions)
    if loop_m > 0:
        img_dev, cap_dev = images.to(device), captions.index(slice(0, loop_m)).to(device)
        loop = LOOPS[type(matcher)]
        sync(device)
        with torch.inference_mode():
            t0 = time.perf_counter()
            loop_sims = loop(matcher, img_dev, cap_dev, range(0, loop_m), args.shard).float().cpu()
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
    return row, sims


def top1_agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Fractions of images (rows) and captions (columns) whose best match is the same in ``a`` and ``b``."""
    return float((a.argmax(1) == b.argmax(1)).float().mean()), float((a.argmax(0) == b.argmax(0)).float().mean())


def precision_row(matcher, images, captions, reference: torch.Tensor, args, device) -> dict:
    """The whole matrix again with float32 products at ``--compare-precision`` (``high``: TF32 on CUDA cards
    that have it), timed like the first, against the first one: the time and how far the numbers move.
    On a CPU the setting changes nothing and the difference is 0."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(args.compare_precision)
    try:
        sync(device)
        t0 = time.perf_counter()
        sims = compute_similarity(matcher, images, captions, memory_budget_mb=args.memory_budget_mb,
                                  cpu_block_mb=args.cpu_block_mb, trim_padding=not args.no_trim, device=device)
        sync(device)
        elapsed = time.perf_counter() - t0
    finally:
        torch.set_float32_matmul_precision(before)
    rows, cols = top1_agreement(reference, sims)
    return {
        "compare_precision": args.compare_precision,
        "compare_precision_s": elapsed,
        "compare_precision_max_abs_diff": float((sims - reference).abs().max()),
        "compare_precision_top1_same_images": rows,
        "compare_precision_top1_same_captions": cols,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1000, help="number of images (default: Flickr30K test, 1000)")
    p.add_argument("--captions", type=int, default=5000, help="number of captions (default 5000)")
    p.add_argument("--regions", type=int, default=36, help="regions per image R (default 36)")
    p.add_argument("--dim", type=int, default=1024, help="embedding size D (default 1024)")
    p.add_argument("--min-words", type=int, default=8, help="shortest caption (default 8)")
    p.add_argument("--max-words", type=int, default=16, help="longest caption, the padded length L (default 16)")
    p.add_argument("--scale-down", type=float, default=1.0, help="divide --images and --captions by this")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated subset of {','.join(METHODS)} (default {','.join(DEFAULT_METHODS)})")
    p.add_argument("--memory-budget-mb", type=float, default=1024.0, help="activation budget of one block (MiB)")
    p.add_argument("--cpu-block-mb", type=float, default=None,
                   help="on the CPU, the largest block in MiB (default: the last-level cache size)")
    p.add_argument("--no-trim", action="store_true",
                   help="keep every block padded to the full width (default: longest first, padding trimmed)")
    p.add_argument("--loop-captions", type=int, default=256,
                   help="captions the per-caption loop runs on; its full time is extrapolated (default 256; "
                        "-1 runs all captions, 0 skips the loop)")
    p.add_argument("--shard", type=int, default=128, help="image and caption shard size of the loop (default 128, as shard_xattn)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--compare-precision", choices=("high", "medium"), default=None,
                   help="after the float32 matrix, compute it again with torch.set_float32_matmul_precision(P) "
                        "(high: TF32 products on recent NVIDIA cards) and record its time, the max abs difference "
                        "and the share of best matches that stay the same (default: off)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all usable cores)")
    p.add_argument("--npz", type=Path, default=None, help="read encoded inputs from this .npz instead of random ones")
    p.add_argument("--write-sims", type=Path, default=None, help="write scan_t2i.npy / scan_i2t.npy here")
    p.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="show a progress bar per method")
    p.add_argument("--fixed-malloc", action="store_true",
                   help="fix glibc's mmap/trim thresholds for both sides (stable page-fault costs; see "
                        "fix_malloc_thresholds)")
    args = p.parse_args(argv)
    if args.fixed_malloc:
        fix_malloc_thresholds()

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for but CUDA is not available")
    device = torch.device(args.device)
    args.loop_captions = None if args.loop_captions < 0 else args.loop_captions
    if args.npz is None:
        args.images = max(1, round(args.images / args.scale_down))
        args.captions = max(1, round(args.captions / args.scale_down))
        images, captions, source = random_inputs(args)
    else:
        images, captions, source = npz_inputs(args)
    methods = [s.strip() for s in args.methods.split(",") if s.strip()]
    n, m = len(images), len(captions)
    r, d = images.features.shape[1:]
    l = captions.features.shape[1]

    load_before = os.getloadavg()
    rows = []
    for name in methods:
        row, sims = bench_method(name, images, captions, args, device)
        rows.append(row)
        if args.write_sims is not None and name in ("scan_t2i", "scan_i2t"):
            args.write_sims.mkdir(parents=True, exist_ok=True)
            np.save(args.write_sims / f"{name}.npy", sims.numpy())
        del sims
    load_after = os.getloadavg()

    header = (f"inputs {source}: {n} images x {m} captions, R={r}, L<={l}, D={d}; device {device}, "
              f"{threads} threads; block budget {args.memory_budget_mb:g} MiB"
              + (f", CPU blocks <= {args.cpu_block_mb or last_level_cache_mb():g} MiB" if device.type == "cpu" else "")
              + f"; padding {'kept' if args.no_trim else 'trimmed'}; "
              f"malloc thresholds {'fixed' if args.fixed_malloc else 'glibc default (adaptive)'}; "
              f"load average before/after {load_before[0]:.2f}/{load_after[0]:.2f} on {os.cpu_count()} cores")
    print(header)
    cols = ("method", "vectorised s", "blocks", "peak RSS MB", "loop s (full)", "speedup", "max |diff|")
    print(" | ".join(cols))
    for row in rows:
        loop = "-"
        if "loop_full_s" in row:
            mark = "*" if row["loop_extrapolated"] else ""
            loop = f"{row['loop_full_s']:.1f}{mark} ({row['loop_captions']} caps: {row['loop_measured_s']:.1f})"
        print(" | ".join([
            row["method"],
            f"{row['vectorised_s']:.1f}",
            f"{row['image_block']}x{row['caption_block']}",
            f"{row['peak_rss_mb']:.0f}",
            loop,
            f"{row['speedup']:.1f}x" if "speedup" in row else "-",
            f"{row['max_abs_diff']:.2e}" if "max_abs_diff" in row else "-",
        ]))
    for row in rows:
        if "compare_precision" in row:
            print(f"{row['method']} with float32 products at precision {row['compare_precision']!r}: "
                  f"{row['compare_precision_s']:.1f} s, max |diff| vs float32 {row['compare_precision_max_abs_diff']:.2e}, "
                  f"same best caption for {100 * row['compare_precision_top1_same_images']:.2f}% of images, same best "
                  f"image for {100 * row['compare_precision_top1_same_captions']:.2f}% of captions")
    if any(row.get("loop_extrapolated") for row in rows):
        print(f"* loop time extrapolated linearly from the first {args.loop_captions} captions to all {m}")

    if args.output is not None:
        result = {
            "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                       "inputs": source, "n_images": n, "n_captions": m, "regions": r, "max_words": l, "dim": d,
                       "threads": threads},
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
