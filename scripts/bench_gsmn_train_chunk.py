"""Benchmark: GSMN's training step with its captions scored in chunks (``train_caption_chunk``), A/B in one process.

The models are copies with the same weights that differ only in ``train_caption_chunk``; each step is
timed for every setting on the same batch, in alternating order, so that the machine's drift (load,
cache, frequency) affects all alike: on a 2-core development VM the step time of one setting wandered
by 30% between separate runs, more than the effect measured here. Shapes and the step are those of
``scripts/bench_train_step.py`` (Flickr30K: 36 x 2048 regions, 1024-d, Bi-GRU, captions of 8-16 words,
batch 64, max-violation hinge, Adam).

Example::

    python scripts/bench_gsmn_train_chunk.py --chunks none,auto,4,8 --steps 6 --threads 1 --output docs/results/gsmn_train_chunk_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_step import add_shape_arguments, build, random_batch, step_vectorised, train_chunk  # noqa: E402

from kgitm.models.losses import ContrastiveLoss  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chunks", default="none,auto", help="comma-separated settings of train_caption_chunk: none, auto or a number of captions")
    p.add_argument("--steps", type=int, default=6, help="timed steps per setting (after one warm-up step)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=None)
    add_shape_arguments(p)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    names = [c.strip() for c in a.chunks.split(",")]
    settings = [train_chunk(c) for c in names]
    base = build("gsmn_sparse", a, torch.device("cpu"))
    models = []
    for setting in settings:
        model = copy.deepcopy(base)
        model.matcher.train_caption_chunk = setting
        models.append((model, torch.optim.Adam(model.parameters(), lr=2e-4)))
    g = torch.Generator().manual_seed(a.seed)
    batches = [random_batch(a.batch, a, g) for _ in range(a.steps + 1)]
    loss_fn = ContrastiveLoss(margin=0.2, max_violation=True, reduction="sum")
    no_autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    probe_images = base.encode_images(batches[0].images)
    probe_captions = base.encode_captions(batches[0].captions)
    chosen = []
    for model, _ in models:
        chosen.append(model.matcher._train_chunk(probe_images, probe_captions))
    load = os.getloadavg()[0]
    times: list[list[float]] = [[] for _ in settings]
    losses: list[list[float]] = [[] for _ in settings]
    for n, batch in enumerate(batches):
        order = list(range(len(settings)))
        for i in order if n % 2 == 0 else order[::-1]:
            model, opt = models[i]
            t0 = time.perf_counter()
            losses[i].append(step_vectorised(model, opt, loss_fn, batch, no_autocast))
            if n:
                times[i].append(time.perf_counter() - t0)
    first = losses[0][0]
    rows = []
    print(f"GSMN training step, batch {a.batch}, {torch.get_num_threads()} threads, load {load:.2f}; median of {a.steps} alternated steps")
    print("train_caption_chunk | captions per chunk | median s/step | vs first | first loss rel. diff")
    for name, chunk, t, lo in zip(names, chosen, times, losses):
        med = statistics.median(t)
        rows.append({"train_caption_chunk": name, "captions_per_chunk": min(chunk or a.batch, a.batch), "median_s": med, "steps_s": t,
                     "first_loss_rel_diff": abs(lo[0] - first) / max(1.0, abs(first))})
        print(f"{name} | {min(chunk or a.batch, a.batch)} | {med:.3f} | {statistics.median(times[0]) / med:.2f}x | {rows[-1]['first_loss_rel_diff']:.1e}")
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(json.dumps({"threads": torch.get_num_threads(), "load_before": load, "load_after": os.getloadavg()[0],
                                        "args": {k: str(v) for k, v in vars(a).items()}, "rows": rows}, indent=1) + "\n")
        print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
