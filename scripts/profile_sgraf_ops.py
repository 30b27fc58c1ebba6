"""Profile: where SGRAF's evaluation time goes, by operator, vectorised blocks vs the release-style loop.

Both sides score the same random inputs at Flickr30K shapes (36 regions, 1024-d, captions of 8-16
words; ``scripts/bench_similarity.py`` makes them) under ``torch.profiler``; for each side the total
operator time and the share of the largest operators are printed. The share of the dense products
(``aten::addmm``, ``aten::bmm``, ``aten::mm``, ``aten::baddbmm``) in the loop bounds what removing the
loop can gain: ``1 / share``.

Example::

    python scripts/profile_sgraf_ops.py --images 128 --captions 48 --threads 2 --output docs/results/sgraf_profile_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_similarity import make_matcher, random_inputs  # noqa: E402
from public_style import loop_sgraf  # noqa: E402

from kgitm.eval.similarity import compute_similarity  # noqa: E402

PRODUCTS = ("aten::addmm", "aten::bmm", "aten::mm", "aten::baddbmm")


def shares(prof) -> tuple[float, dict[str, float]]:
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return total / 1e6, {e.key: e.self_cpu_time_total / total for e in sorted(events, key=lambda e: -e.self_cpu_time_total)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="sgraf_saf,sgraf_sgr")
    p.add_argument("--images", type=int, default=128, help="images (default: one shard of the release's loop, 128)")
    p.add_argument("--captions", type=int, default=48)
    p.add_argument("--regions", type=int, default=36)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--min-words", type=int, default=8)
    p.add_argument("--max-words", type=int, default=16)
    p.add_argument("--shard", type=int, default=128, help="the loop's image shard (the release's 128)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    images, captions, _ = random_inputs(a)
    rows = []
    for name in a.methods.split(","):
        matcher = make_matcher(name, a.seed, dim=a.dim, regions=a.regions).eval()
        with torch.inference_mode():
            matcher(images.index(slice(0, 4)), captions.index(slice(0, 4)))  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as vectorised:
                compute_similarity(matcher, images, captions)
            with profile(activities=[ProfilerActivity.CPU]) as loop:
                loop_sgraf(matcher, images, captions, range(len(captions)), a.shard)
        for side, prof in (("vectorised", vectorised), ("loop", loop)):
            total, share = shares(prof)
            products = sum(v for k, v in share.items() if k in PRODUCTS)
            rows.append({"method": name, "side": side, "total_s": total, "products_share": products,
                         "top": dict(list(share.items())[:8])})
            top = "; ".join(f"{k} {100 * v:.0f}%" for k, v in list(share.items())[:5])
            bound = f", loop-removal bound {1 / products:.2f}x" if side == "loop" else ""
            print(f"{name} {side}: {total:.2f} s of operators, dense products {100 * products:.0f}%{bound} ({top})")
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(json.dumps({"threads": torch.get_num_threads(), "args": {k: str(v) for k, v in vars(a).items()}, "rows": rows}, indent=1) + "\n")
        print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
