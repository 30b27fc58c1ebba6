"""``kgitm synthscenes``: the command line of the generator (``main(argv)`` returns the exit status)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from kgitm.data.synthscenes.config import PRESETS, SPLITS, make_config
from kgitm.data.synthscenes.writer import generate, is_up_to_date, read_meta


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kgitm synthscenes",
        description=(
            "Generate SynthScenes, a synthetic image-text retrieval data set in the precomputed layout. "
            "Writes, per split (train, dev, test): {split}_ims.npy (N, R, D) region features, "
            "{split}_caps.txt (k lines per image), {split}_ids.txt, {split}_ims_bbx.npy (N, R, 4) pixel "
            "boxes, {split}_ims_size.npy (N, 2) width/height, {split}_scene_graphs.json; plus "
            "diagnostics/test_relation_swap.jsonl, diagnostics/test_attribute_swap.jsonl, "
            "diagnostics/test_synonym_shift_caps.txt and meta.json (written last). "
            "See docs/synthscenes.md."
        ),
    )
    p.add_argument("--out", default="data/synthscenes", help="output folder (default: %(default)s)")
    p.add_argument("--preset", default="small", choices=sorted(PRESETS),
                   help="size preset: tiny (tests: 64/16/16 images, R=8, D=32), small (default; CPU quickstart: "
                        "3000/300/300, R=12, D=128), real (benchmarks: 10000/1000/1000, R=36, D=2048)")
    p.add_argument("--seed", type=int, default=0, help="seed of all randomness (default: %(default)s)")
    p.add_argument("--images-train", type=int, help="train images (overrides the preset)")
    p.add_argument("--images-dev", type=int, help="dev images (overrides the preset)")
    p.add_argument("--images-test", type=int, help="test images (overrides the preset)")
    p.add_argument("--regions", type=int, help="R, region boxes per image (overrides the preset)")
    p.add_argument("--feature-dim", type=int, help="D, region feature size (overrides the preset)")
    p.add_argument("--captions-per-image", type=int, help="k captions per image (default 5)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing data set in --out generated with other parameters")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``kgitm synthscenes``: generate the data set and print a summary."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    names = ("images_train", "images_dev", "images_test", "regions", "feature_dim", "captions_per_image")
    overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    try:
        cfg = make_config(args.preset, seed=args.seed, **overrides)
    except (ValueError, TypeError) as e:
        print(f"kgitm synthscenes: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if is_up_to_date(out, cfg):
        print(f"{out}: up to date (same parameters); nothing to do")
        return 0
    t0 = time.perf_counter()
    try:
        generate(out, preset=args.preset, seed=args.seed, overwrite=args.overwrite, progress=True, **overrides)
    except FileExistsError as e:
        print(f"kgitm synthscenes: {e}", file=sys.stderr)
        return 2
    meta = read_meta(out)
    for split in SPLITS:
        n = meta["splits"][split]
        print(f"{split:5s}: {n} images, {n * cfg.captions_per_image} captions, "
              f"features ({n}, {cfg.regions}, {cfg.feature_dim})")
    d = meta["diagnostics"]
    print(f"diagnostics: {d['relation_swap']} relation-swap pairs, {d['attribute_swap']} attribute-swap pairs, "
          f"{d['synonym_shift_changed']}/{d['synonym_shift_captions']} synonym-shift captions changed")
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return 0
