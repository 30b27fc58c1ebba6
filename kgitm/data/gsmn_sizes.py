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

import os
import warnings

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
