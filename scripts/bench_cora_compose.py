"""Benchmark: CORA's caption composition on a run's test split, grouped by object count vs the whole padded block.

In evaluation :meth:`kgitm.matchers.cora.CORA.compose` composes captions with the same number of object
slots together, each group cut to its own width; before, the whole split was composed at once, padded
to its widest scene graph. Both are timed here on the run's encoded test split (median of
``--repeats``), with the largest difference of the caption vectors.

Example::

    python scripts/bench_cora_compose.py runs/cora_synthscenes/seed0 --threads 2 --output docs/results/cora_compose_synthscenes.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kgitm.cli.runs import RunLoadError, encode_test, open_run  # noqa: E402
from kgitm.core.functional import l2norm  # noqa: E402
from kgitm.matchers.cora import CORA  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a CORA run folder (RUN/logs/config.yaml, RUN/checkpoints/best.ckpt or last.ckpt)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", type=Path, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        task, dm = open_run(a.run)
    except RunLoadError as err:
        raise SystemExit(f"bench_cora_compose: {err}") from None
    matcher = task.model.scorer
    if not isinstance(matcher, CORA):
        raise SystemExit(f"bench_cora_compose: {a.run} is a {type(matcher).__name__} run, not CORA")
    captions = encode_test(task, dm).captions
    obj = captions.extra["obj_mask"]
    slots = (obj.long() * torch.arange(1, obj.shape[1] + 1)).amax(1)

    def whole() -> torch.Tensor:
        return matcher.compose_caption(captions, matcher.compose_entities(captions))

    def grouped() -> torch.Tensor:
        return matcher.compose(captions)[0]

    times = {"whole": [], "grouped": []}
    with torch.inference_mode():
        for _ in range(a.repeats):
            for name, fn in (("whole", whole), ("grouped", grouped)):
                t0 = time.perf_counter()
                out = fn()
                times[name].append(time.perf_counter() - t0)
                if name == "whole":
                    ref = out
        diff = float((l2norm(out) - l2norm(ref)).abs().max())
    row = {"captions": len(captions), "padded_slots": int(obj.shape[1]), "slots_histogram": torch.bincount(slots).tolist(),
           "whole_s": statistics.median(times["whole"]), "grouped_s": statistics.median(times["grouped"]), "max_abs_diff": diff,
           "threads": torch.get_num_threads(), "load": os.getloadavg()[0]}
    row["speedup"] = row["whole_s"] / row["grouped_s"]
    print(f"{row['captions']} captions padded to {row['padded_slots']} object slots (captions per slot count {row['slots_histogram']}); "
          f"{row['threads']} threads, load {row['load']:.2f}")
    print(f"whole block {row['whole_s']:.3f} s | grouped {row['grouped_s']:.3f} s | {row['speedup']:.1f}x | max abs diff {diff:.1e}")
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(json.dumps({"run": str(a.run), **row, "repeats_s": times}, indent=1) + "\n")
        print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
