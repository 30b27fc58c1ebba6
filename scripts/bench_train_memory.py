"""Benchmark: resident memory of GSMN training steps at paper size on the CPU, step by step.

Issue: at 1024-d and batch 128 the resident set was still growing after 4 steps. This script trains
the same model as ``scripts/bench_train_step.py`` (36 regions x 2048-d in, 1024-d joint space, Bi-GRU
300 -> 1024, captions of 8-16 words, max-violation hinge, Adam) on fresh random batches and records
after every step the resident set (``VmRSS``), its peak so far (``VmHWM``) and the bytes glibc's
allocator holds (``mallinfo2``: in use and free-but-kept), next to the start-up estimate that
``kgitm fit`` prints (the matcher's per-pair activation memory x B^2 + 4 x the weights).

Growth that stops after the first steps (Adam's state appears at step 1; the allocator's free lists
fill up to the largest step seen, caption widths vary from batch to batch) is not a leak; growth that
keeps its slope over many steps is. The table gives the peak after steps 1, 2, 4, 8, ... and the
slope over the second half of the run.

Examples::

    python scripts/bench_train_memory.py --steps 12 --output docs/results/train_memory_gsmn_cpu.json
    python scripts/bench_train_memory.py --batch 32 --steps 30
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_train_step import add_shape_arguments, build, random_batch  # noqa: E402 - scripts/bench_train_step.py

from kgitm.models.losses import ContrastiveLoss  # noqa: E402

GIB = 2**30


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def malloc_bytes() -> dict[str, int] | None:
    """glibc's view of the heap: bytes in use (``uordblks`` + mmapped ``hblkhd``) and free bytes it keeps."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    m = libc.mallinfo2()
    return {"in_use": m.uordblks + m.hblkhd, "free_kept": m.fordblks}


def estimate_bytes(model, batch, b: int) -> tuple[int, int]:
    """The start-up estimate of ``kgitm fit`` (kgitm/cli/lightning.py ``_check_step_memory``)."""
    with torch.no_grad():
        per_pair = model.matcher.pair_memory_bytes(model.encode_images(batch.images), model.encode_captions(batch.captions))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return per_pair * b * b, 4 * params


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="gsmn_sparse", help="a method of scripts/bench_train_step.py (default %(default)s)")
    p.add_argument("--batch", type=int, default=128, help="default %(default)s (the issue's setting)")
    p.add_argument("--steps", type=int, default=12)
    add_shape_arguments(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cpu")
    g = torch.Generator().manual_seed(a.seed)
    model = build(a.method, a, device)
    loss_fn = ContrastiveLoss(margin=0.2, max_violation=True, reduction="sum")
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    first = random_batch(a.batch, a, g)
    pairs, weights = estimate_bytes(model, first, a.batch)
    start = proc_status()
    print(f"{a.method} training at {a.embed_dim}-d, batch {a.batch}, on {platform.processor() or platform.machine()} "
          f"({torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}); kgitm fit's estimate: "
          f"{pairs / GIB:.2f} GiB pair activations + {weights / GIB:.2f} GiB weights/gradients/Adam; "
          f"RSS before the first step {start['VmRSS'] / GIB:.2f} GiB")
    print("step | words | s | RSS GiB | peak RSS GiB | malloc in use GiB | malloc free kept GiB")
    rows = []
    for step in range(1, a.steps + 1):
        batch = first if step == 1 else random_batch(a.batch, a, g)
        t0 = time.perf_counter()
        loss = loss_fn(model(batch).sims)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        del loss
        dt = time.perf_counter() - t0
        st, mb = proc_status(), malloc_bytes()
        row = {"step": step, "words": int(batch.captions.lengths.max()), "seconds": dt, "rss": st["VmRSS"], "peak_rss": st["VmHWM"],
               **({"malloc_in_use": mb["in_use"], "malloc_free_kept": mb["free_kept"]} if mb else {})}
        rows.append(row)
        mtxt = f"{mb['in_use'] / GIB:.2f} | {mb['free_kept'] / GIB:.2f}" if mb else "- | -"
        print(f"{step} | {row['words']} | {dt:.1f} | {st['VmRSS'] / GIB:.2f} | {st['VmHWM'] / GIB:.2f} | {mtxt}", flush=True)
    half = rows[len(rows) // 2 :]
    slope = (half[-1]["peak_rss"] - half[0]["peak_rss"]) / max(1, half[-1]["step"] - half[0]["step"])
    print(f"peak RSS after step 1: {rows[0]['peak_rss'] / GIB:.2f} GiB, after step {rows[-1]['step']}: {rows[-1]['peak_rss'] / GIB:.2f} GiB; "
          f"slope over steps {half[0]['step']}-{half[-1]['step']}: {slope / 2**20:.1f} MiB/step")
    if a.output:
        from kgitm.core.io import atomic_write_text

        atomic_write_text(a.output, json.dumps({
            "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "load_after": os.getloadavg()[0], "args": {k: str(v) for k, v in vars(a).items()},
            "estimate": {"pair_activations": pairs, "weights_grads_adam": weights}, "rss_before": start["VmRSS"],
            "rows": rows, "late_slope_bytes_per_step": slope}, indent=1) + "\n")
        print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
