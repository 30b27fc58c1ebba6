"""Convert GSMN's pickled ``{split}_ims_size.npy`` to a plain ``(N, 2)`` float32 array.

GSMN (Liu et al., CVPR 2020) ships image sizes as an object array of ``{"image_w", "image_h"}``
dicts, which numpy can only read by unpickling; unpickling runs arbitrary code, and a restricted
unpickler cannot rebuild an object array of dicts. The conversion therefore needs the explicit
``--allow-pickle`` flag and warns; run it once, on a file you trust, and use the plain array after.
A file that is already a plain numeric ``(N, 2)`` array is converted without unpickling.

Command::

    kgitm convert-gsmn-sizes data/f30k_precomp/test_ims_size.npy --out data/f30k_precomp/test_ims_size.npy \
        --allow-pickle
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np


class PickleRefusedError(ValueError):
    """The sizes file holds pickled objects and ``allow_pickle`` was not given."""


def load_gsmn_sizes(path: str | os.PathLike, *, allow_pickle: bool = False) -> np.ndarray:
    """Image sizes as a plain array.

    Args:
        path: GSMN ``{split}_ims_size.npy`` (object array of dicts) or a plain ``(N, 2)`` array.
        allow_pickle: permit unpickling an object array (default False: refused with an error).

    Shapes:
        Output: ``(N, 2)`` float32 ``(width, height)``.
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise
        if not allow_pickle:
            raise PickleRefusedError(
                f"{path} is a pickled object array (GSMN's size dicts); unpickling can run arbitrary code. "
                "If you trust the file, convert it once with: "
                f"kgitm convert-gsmn-sizes {path} --out OUT.npy --allow-pickle"
            ) from None
        warnings.warn(f"unpickling {path} because allow_pickle was given; only do this for files you trust", stacklevel=2)
        arr = np.load(path, allow_pickle=True)
    if arr.dtype == object:
        flat = arr.reshape(-1)
        try:
            out = np.array([[float(d["image_w"]), float(d["image_h"])] for d in flat], dtype=np.float32)
        except (TypeError, KeyError) as e:
            raise ValueError(f"{path}: expected an object array of {{'image_w', 'image_h'}} dicts ({e!r})") from None
        return out.reshape(len(flat), 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{path}: expected (N, 2) sizes or GSMN size dicts, got an array of shape {arr.shape}")
    return arr.astype(np.float32)


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
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.npy")
    np.save(tmp, sizes)
    os.replace(tmp, out)
    print(f"wrote {sizes.shape[0]} image sizes (width, height) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
