"""Benchmark: one training step (forward, backward, Adam) at Flickr30K shapes, vectorised vs the public code's loop.

The step of this repository scores the batch's ``B x B`` image-caption pairs with one batched matcher
call (:class:`kgitm.models.MatchingModel`); the public SCAN and GSMN code loops over the captions
inside its loss (``xattn_score_t2i``: each caption repeated against all images of the batch), written
here in :mod:`public_style`. Both steps use the same encoders and weights (a copy), the same
max-violation hinge (margin 0.2, summed) and Adam; the losses must agree to 1e-5 (relative; 1e-2
under bf16 autocast). Steps
alternate between the two sides so that load on the machine affects both alike; the table gives the
median step time of each side and their ratio.

Shapes (defaults, the field's Flickr30K setup): 36 regions x 2048-d features, 1024-d joint space,
Bi-GRU 300 -> 1024 over a 8,500-word vocabulary, captions of 8-16 words; batch 128 for VSE++ and
SCAN, 64 for GSMN (GSMN's own batch). VSE++ has no loop (its public code is one matrix product): its
row is the plain step time, for scale.

Examples::

    python scripts/bench_train_step.py --output docs/results/train_step_cpu.json
    python scripts/bench_train_step.py --device cuda --precision bf16 --output train_step_gpu_bf16.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_similarity import fix_malloc_thresholds, random_boxes, random_trees  # noqa: E402 - scripts/bench_similarity.py
from public_style import loop_gsmn, loop_scan  # noqa: E402 - scripts/public_style.py

from kgitm.core.batch import Batch, CaptionInputs, ImageInputs  # noqa: E402
from kgitm.encoders.image import RegionEncoder  # noqa: E402
from kgitm.encoders.text import BiGRUTextEncoder  # noqa: E402
from kgitm.matchers.global_embedding import GlobalEmbeddingMatcher  # noqa: E402
from kgitm.matchers.gsmn import GSMNMatcher  # noqa: E402
from kgitm.matchers.scan import SCANMatcher  # noqa: E402
from kgitm.models.losses import ContrastiveLoss  # noqa: E402
from kgitm.models.matching import MatchingModel  # noqa: E402

BATCH = {"vsepp": 128, "scan_t2i": 128, "scan_i2t": 128, "gsmn_sparse": 64}
LOOPS = {"scan_t2i": loop_scan, "scan_i2t": loop_scan, "gsmn_sparse": loop_gsmn}
#: how far the two sides' first losses may differ (relative): float32 sums in another order, or bf16's
#: 8-bit mantissa (about 2-3 significant digits) under autocast
LOSS_TOLERANCE = {"fp32": 1e-5, "bf16": 1e-2}


def train_chunk(text: str) -> int | str | None:
    """``--gsmn-train-chunk``: ``auto``, ``none`` or a number of captions."""
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a number of captions, got {text!r}") from None


def make_matcher(name: str, gsmn_train_chunk: int | str | None = "auto"):
    if name == "vsepp":
        return GlobalEmbeddingMatcher()
    if name == "scan_t2i":
        return SCANMatcher("t2i", lambda_softmax=9.0, aggregation="lse", lambda_lse=6.0)
    if name == "scan_i2t":
        return SCANMatcher("i2t", lambda_softmax=4.0, aggregation="lse", lambda_lse=5.0)
    if name == "gsmn_sparse":
        return GSMNMatcher("sparse", train_caption_chunk=gsmn_train_chunk)
    raise SystemExit(f"unknown method {name!r}; choose from {', '.join(BATCH)}")


def random_batch(b: int, args: argparse.Namespace, g: torch.Generator) -> Batch:
    lengths = torch.randint(args.min_words, args.max_words + 1, (b,), generator=g)
    width = int(lengths.max())
    mask = torch.arange(width)[None] < lengths[:, None]
    ids = torch.randint(2, args.vocab, (b, width), generator=g) * mask
    images = ImageInputs(torch.randn(b, args.regions, args.feature_dim, generator=g).abs(), torch.ones(b, args.regions, dtype=torch.bool),
                         random_boxes(b, args.regions, g))
    captions = CaptionInputs(ids, mask, lengths, [["w"] * int(n) for n in lengths], adjacency=random_trees(lengths, width, g))
    return Batch(images, captions, torch.arange(b), torch.arange(b))


def build(name: str, args: argparse.Namespace, device: torch.device) -> MatchingModel:
    torch.manual_seed(args.seed)
    model = MatchingModel(RegionEncoder(args.feature_dim, args.embed_dim),
                          BiGRUTextEncoder(args.vocab, args.word_dim, args.embed_dim), make_matcher(name, args.gsmn_train_chunk))
    return model.to(device).train()


def step_vectorised(model, opt, loss_fn, batch, autocast) -> float:
    with autocast():
        loss = loss_fn(model(batch).sims.float())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def step_loop(name, model, opt, loss_fn, batch, autocast) -> float:
    with autocast():
        images = model.encode_images(batch.images)
        captions = model.encode_captions(batch.captions)
        sims = LOOPS[name](model.matcher, images, captions, range(len(batch.captions.lengths)), len(batch.captions.lengths))
        loss = loss_fn(sims.to(images.features.device).float())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(args.seed)
    b = args.batch or BATCH[name]
    batches = [random_batch(b, args, g).to(device) for _ in range(args.warmup + args.steps)]
    fast = build(name, args, device)
    slow = copy.deepcopy(fast) if name in LOOPS and not args.no_loop else None
    loss_fn = ContrastiveLoss(margin=0.2, max_violation=True, reduction="sum")
    opt_fast = torch.optim.Adam(fast.parameters(), lr=2e-4)
    opt_slow = torch.optim.Adam(slow.parameters(), lr=2e-4) if slow is not None else None
    dtype = torch.bfloat16 if args.precision == "bf16" else None

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    times_fast, times_slow, diffs = [], [], []
    for n, batch in enumerate(batches):
        sync(device)
        t0 = time.perf_counter()
        loss_fast = step_vectorised(fast, opt_fast, loss_fn, batch, autocast)
        sync(device)
        t1 = time.perf_counter()
        if slow is not None:
            loss_slow = step_loop(name, slow, opt_slow, loss_fn, batch, autocast)
            sync(device)
            t2 = time.perf_counter()
            if n == 0:  # the same weights only before the first update (float sums differ after)
                diffs.append(abs(loss_fast - loss_slow) / max(1.0, abs(loss_fast)))
        if n >= args.warmup:
            times_fast.append(t1 - t0)
            if slow is not None:
                times_slow.append(t2 - t1)
    row = {"method": name, "batch": b, "steps": args.steps, "vectorised_s": statistics.median(times_fast),
           "steps_per_s": 1.0 / statistics.median(times_fast),
           "epoch_min_extrapolated": args.epoch_captions / b * statistics.median(times_fast) / 60}
    if slow is not None:
        row.update(loop_s=statistics.median(times_slow), speedup=statistics.median(times_slow) / statistics.median(times_fast),
                   loss_rel_diff=max(diffs))
        tol = LOSS_TOLERANCE[args.precision]
        if max(diffs) > tol:
            raise SystemExit(f"{name}: the vectorised and loop losses differ by {max(diffs):.2e} (relative) > {tol:g}")
    return row


def add_shape_arguments(p: argparse.ArgumentParser) -> None:
    """The Flickr30K shapes of the model and its random batches (also used by bench_train_memory.py)."""
    p.add_argument("--regions", type=int, default=36)
    p.add_argument("--feature-dim", type=int, default=2048)
    p.add_argument("--embed-dim", type=int, default=1024)
    p.add_argument("--word-dim", type=int, default=300)
    p.add_argument("--vocab", type=int, default=8500)
    p.add_argument("--min-words", type=int, default=8)
    p.add_argument("--max-words", type=int, default=16)
    p.add_argument("--gsmn-train-chunk", type=train_chunk, default="auto",
                   help="GSMN's train_caption_chunk: auto (the default: 8 captions on a CPU), none (the whole batch) or captions per chunk")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="vsepp,scan_t2i,gsmn_sparse", help=f"comma-separated among {', '.join(BATCH)}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast (bf16-mixed)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=None, help="override the per-method batch")
    add_shape_arguments(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-loop", action="store_true", help="time the vectorised step only (e.g. while sampling GPU utilisation)")
    p.add_argument("--epoch-captions", type=int, default=145_000, help="captions of one epoch, for the extrapolated epoch time (Flickr30K train: 145,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fixed-malloc", action="store_true",
                   help="fix glibc's mmap and trim thresholds first (scripts/bench_similarity.py --fixed-malloc), so that page faults do not vary with the process's history")
    p.add_argument("--output", type=Path, default=None)
    a = p.parse_args(argv)
    if a.fixed_malloc:
        fix_malloc_thresholds()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    load = os.getloadavg()[0]
    print(f"training step at Flickr30K shapes on {name} ({a.precision}, {torch.get_num_threads()} CPU threads, load {load:.2f} on {os.cpu_count()} cores)")
    print("method | batch | vectorised s/step | epoch min (extrapolated) | loop s/step | speedup | loss rel. diff")
    rows = []
    for m in a.methods.split(","):
        r = bench(m.strip(), a, device)
        rows.append(r)
        loop = f"{r['loop_s']:.3f} | {r['speedup']:.2f}x | {r['loss_rel_diff']:.1e}" if "loop_s" in r else "- | - | -"
        print(f"{m} | {r['batch']} | {r['vectorised_s']:.3f} | {r['epoch_min_extrapolated']:.1f} | {loop}", flush=True)
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(json.dumps({"device": name, "precision": a.precision, "threads": torch.get_num_threads(), "fixed_malloc": a.fixed_malloc,
                                        "load_before": load, "load_after": os.getloadavg()[0], "args": {k: str(v) for k, v in vars(a).items()},
                                        "rows": rows}, indent=1) + "\n")
        print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
