"""``kgitm convert-gsmn-sizes``: GSMN's pickled image sizes -> a plain ``(N, 2)`` array
(:func:`kgitm.data.gsmn_sizes.load_gsmn_sizes`)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from kgitm.core.io import atomic_write_npy
from kgitm.data.gsmn_sizes import load_gsmn_sizes


def main(argv: list[str] | None = None) -> int:
    """``kgitm convert-gsmn-sizes``: pickled size dicts -> plain ``(N, 2)`` array."""
    ap = argparse.ArgumentParser(
        prog="kgitm convert-gsmn-sizes",
        description="Convert GSMN's {split}_ims_size.npy (pickled object array of {'image_w','image_h'} dicts) "
        "to a plain float32 (N, 2) width,height array.",
    )
    ap.add_argument("sizes", help="GSMN {split}_ims_size.npy")
    ap.add_argument("--out", required=True, help="output .npy (may be the input path: it is replaced atomically)")
    ap.add_argument(
        "--allow-pickle",
        action="store_true",
        help="permit unpickling the input (required for GSMN's object arrays; only for files you trust)",
    )
    args = ap.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sizes = load_gsmn_sizes(args.sizes, allow_pickle=args.allow_pickle)
        for w in caught:
            print(f"kgitm convert-gsmn-sizes: warning: {w.message}", file=sys.stderr)
    except (ValueError, OSError) as e:
        print(f"kgitm convert-gsmn-sizes: error: {e}", file=sys.stderr)
        return 1
    out = Path(args.out)
    atomic_write_npy(out, sizes)
    print(f"wrote {sizes.shape[0]} image sizes (width, height) to {out}")
    return 0

