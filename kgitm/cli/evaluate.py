"""``kgitm evaluate``: score a saved similarity matrix (``.npy``) with the standard protocol.

Prints the retrieval table to stdout and optionally writes the metrics as JSON (see
:func:`kgitm.eval.metrics.evaluate_retrieval` for the keys and :mod:`kgitm.eval.metrics` for the
rank and tie conventions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from kgitm.core import CAPTIONS_PER_IMAGE
from kgitm.core.io import atomic_write_json
from kgitm.eval.matrix import SimilarityFileError, check_layout, load_similarity
from kgitm.eval.metrics import METRIC_KEYS, PROTOCOLS, evaluate_retrieval
from kgitm.eval.report import format_retrieval_table

PROG = "kgitm evaluate"

_DESCRIPTION = """\
Score a saved image-caption similarity matrix with the standard retrieval protocol and print
i2t/t2i R@1, R@5, R@10, medr, meanr and RSUM (the true sum of the six recalls).

Layout: SIMS.npy is a 2-D array of shape (N_img, N_cap) with N_cap = k * N_img, where k is
--captions-per-image; row i is image i and the k captions of image i are at columns
k*i .. k*i+k-1 (the order of the precomp {split}_caps.txt files: caption line c belongs to
image c // k). A matrix saved the other way round (captions x images) needs --transpose.

Ranks are 0-based; R@K = 100 * mean(rank < K), medr = floor(median(rank)) + 1,
meanr = mean(rank) + 1. Ties: a ground truth is ranked after every candidate with a strictly
higher score and after tied candidates with a lower index (a stable descending sort).
"""

_EPILOG = f"""\
JSON written by --output (sorted keys, plain floats, recalls in percent):
  {' '.join(METRIC_KEYS[:5])}
  {' '.join(METRIC_KEYS[5:])}
  with --protocol coco1k also "folds": one dict of the same keys per fold; the top-level
  values are the fold means (rsum = mean of the fold RSUMs = sum of the mean recalls).

examples:
  kgitm evaluate runs/gsmn/test_sims.npy --output runs/gsmn/test_results.json
  kgitm evaluate coco_5k_sims.npy --protocol coco1k
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kgitm evaluate``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sims",
        metavar="SIMS.npy",
        type=Path,
        help="similarity matrix saved with np.save, shape (N_img, k * N_img), images as rows "
        "(read memory-mapped, no pickles)",
    )
    parser.add_argument(
        "--captions-per-image",
        type=int,
        default=CAPTIONS_PER_IMAGE,
        metavar="K",
        help=f"captions per image k; the captions of image i are columns k*i..k*i+k-1 (default: {CAPTIONS_PER_IMAGE})",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="single",
        help="single: the whole matrix (Flickr30K 1K test); coco5k: the same on the 5K COCO test "
        "matrix; coco1k: mean over consecutive folds of --fold-images images and their captions "
        "(default: single)",
    )
    parser.add_argument(
        "--fold-images",
        type=int,
        default=1000,
        metavar="N",
        help="images per fold for --protocol coco1k; N_img must be a multiple of it (default: 1000)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="RESULTS.json",
        help="also write the metrics as JSON (sorted keys, written atomically); default: print only",
    )
    parser.add_argument(
        "--transpose",
        action="store_true",
        help="the file holds captions as rows and images as columns, shape (k * N_img, N_img); "
        "it is transposed (copied into memory) before scoring",
    )
    return parser


def _load(path: Path, *, transpose: bool, k: int) -> np.ndarray:
    """Load and validate the matrix (memory-mapped unless transposed); errors exit with one line."""
    try:
        sims = load_similarity(path)
        if transpose:
            sims = np.ascontiguousarray(sims.T)
        check_layout(sims, k, path=path, transposed=transpose)
    except SimilarityFileError as err:
        raise SystemExit(f"{PROG}: {err}") from None
    return sims


def main(argv: list[str]) -> int:
    """Run ``kgitm evaluate`` with ``argv`` (the arguments after the command name)."""
    args = build_parser().parse_args(argv)
    sims = _load(args.sims, transpose=args.transpose, k=args.captions_per_image)
    try:
        results = evaluate_retrieval(
            sims, args.captions_per_image, args.protocol, fold_images=args.fold_images
        )
    except ValueError as err:  # non-finite scores, fold size: messages name what and how to fix
        msg = str(err)
        if args.transpose:
            msg += " (row/col of the transposed matrix)"
        raise SystemExit(f"{PROG}: {args.sims}: {msg}") from err

    name = args.sims.stem
    table = {name: results}
    if args.protocol == "coco1k":
        table = {f"{name} fold {i}": fold for i, fold in enumerate(results["folds"])}
        table[f"{name} mean"] = results
    title = (
        f"{args.sims} | protocol {args.protocol} | {sims.shape[0]} images x {sims.shape[1]} captions"
    )
    if args.protocol == "coco1k":
        title += f" | {len(results['folds'])} folds of {args.fold_images} images"
    print(format_retrieval_table(table, title=title))
    if args.output is not None:
        atomic_write_json(args.output, results)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0

