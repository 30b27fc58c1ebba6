"""Saved similarity matrices: read them safely and check their layout.

The layout every kgitm command reads and writes (``kgitm predict``, ``kgitm evaluate``,
``kgitm ensemble``): a 2-D ``.npy`` of shape ``(N_img, N_cap)``, ``N_cap = k * N_img``, row ``i`` image
``i`` and the ``k`` captions of image ``i`` at columns ``k*i .. k*i+k-1``. Files are memory-mapped and
never unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["SimilarityFileError", "check_layout", "load_similarity"]


class SimilarityFileError(ValueError):
    """A similarity matrix file that cannot be used (message: file, what is wrong, what to do)."""


def load_similarity(path: str | os.PathLike[str]) -> np.ndarray:
    """Open a saved similarity matrix memory-mapped (no pickles) and check it is a real 2-D array.

    Args:
        path: a ``.npy`` file written by ``np.save`` (e.g. by ``kgitm predict``).

    Returns:
        A read-only memmap of shape ``(N_img, N_cap)``.

    Raises:
        SimilarityFileError: missing file, not a plain ``.npy``, not 2-D or not real-valued.
    """
    path = Path(path)
    if not path.is_file():
        raise SimilarityFileError(f"{path}: no such file; pass the .npy written by `kgitm predict --sims_out` or np.save")
    try:
        sims = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise SimilarityFileError(f"{path}: cannot read as a plain numeric .npy ({err}); save it with np.save") from err
    if not isinstance(sims, np.ndarray):
        raise SimilarityFileError(f"{path}: is an .npz archive, expected one .npy array; save the matrix with np.save")
    if sims.ndim != 2:
        raise SimilarityFileError(f"{path}: expected a 2-D similarity matrix (N_img, N_cap), got shape {sims.shape}")
    if not (np.issubdtype(sims.dtype, np.floating) or np.issubdtype(sims.dtype, np.integer)):
        raise SimilarityFileError(f"{path}: expected real-valued scores, got dtype {sims.dtype}")
    return sims


def check_layout(sims: np.ndarray, captions_per_image: int, *, path: str | os.PathLike[str], transposed: bool = False) -> None:
    """Check that ``sims`` is ``(N_img, k * N_img)``; the error says when the transposed shape fits.

    Raises:
        SimilarityFileError: ``captions_per_image < 1`` or a shape that does not match.
    """
    k = captions_per_image
    if k < 1:
        raise SimilarityFileError(f"{path}: --captions-per-image must be >= 1, got {k}")
    n_img, n_cap = sims.shape
    if n_cap != k * n_img:
        hint = "; the transposed shape fits: pass --transpose" if n_img == k * n_cap else "; check --captions-per-image"
        flag = " (after --transpose)" if transposed else ""
        raise SimilarityFileError(
            f"{path}: shape{flag} {(n_img, n_cap)} does not match --captions-per-image {k}: expected "
            f"({n_img}, {k * n_img}) with the captions of image i at columns k*i..k*i+k-1{hint}"
        )
