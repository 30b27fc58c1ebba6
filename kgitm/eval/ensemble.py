"""Ensembles: the weighted mean of several models' similarity matrices (``kgitm ensemble``).

The published two-model numbers are ensembles: GSMN reports sparse + dense, SCAN reports
t2i + i2t, each the mean of the two models' test similarity matrices. This command rebuilds those
numbers from saved matrices (``kgitm predict --sims_out``, or any ``.npy`` in the layout of
``kgitm evaluate``) or from checkpoints (the command, :mod:`kgitm.cli.ensemble`, runs ``kgitm predict``).

Matrices are read memory-mapped and averaged in chunks of rows, so averaging two COCO 5K matrices
needs one output matrix of memory (none with ``--sims-out``, which is written through a memory map)
rather than three.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from kgitm.eval.matrix import SimilarityFileError, load_similarity

__all__ = ["EnsembleError", "Member", "average_similarity", "load_similarity", "normalized_weights"]

# Matrix entries per averaging chunk (a float64 accumulator of this size, ~32 MB).
_CHUNK_ELEMENTS = 1 << 22


class EnsembleError(SimilarityFileError):
    """A member matrix that cannot be averaged (message: file, what is wrong, what to do)."""


@dataclass
class Member:
    """One model of the ensemble: a name for the table, its matrix file and where it came from."""

    name: str
    path: Path
    source: dict[str, Any] = field(default_factory=dict)


def normalized_weights(weights: Optional[Sequence[float]], count: int) -> np.ndarray:
    if weights is None:
        return np.full(count, 1.0 / count)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (count,):
        raise EnsembleError(f"got {w.size} weights for {count} matrices; pass one weight per member (--weights)")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise EnsembleError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return w / w.sum()


def average_similarity(
    matrices: Sequence[np.ndarray],
    weights: Optional[Sequence[float]] = None,
    *,
    names: Optional[Sequence[str]] = None,
    out: Optional[np.ndarray] = None,
    chunk_rows: Optional[int] = None,
) -> np.ndarray:
    """Weighted mean of similarity matrices, computed in chunks of rows.

    ``S = sum_i w_i S_i / sum_i w_i``, accumulated in float64 one chunk of rows at a time (the
    members may be memory-mapped) and stored in ``out``. Every chunk of every member is checked to
    be finite.

    Args:
        matrices: the members' matrices, all the same shape.
        weights: one non-negative weight per member (default: equal weights); they are normalised
            to sum to one.
        names: member names used in error messages (default ``"matrix 0"``, ...).
        out: where to write the mean (e.g. a writable memmap); default a new array of the widest
            member float dtype (at least float32).
        chunk_rows: rows per chunk (default: about 4M entries); changes memory use, not the result.

    Returns:
        ``out`` holding the mean.

    Raises:
        EnsembleError: no members, shapes that differ (naming both members and their shapes), bad
            weights, or a NaN/inf score (naming the member, row and column).

    Shapes:
        matrices: ``(N_img, N_cap)`` each. Output: ``(N_img, N_cap)``.
    """
    if not matrices:
        raise EnsembleError("no similarity matrices to average; pass at least one .npy or --run")
    names = list(names) if names is not None else [f"matrix {i}" for i in range(len(matrices))]
    shape = matrices[0].shape
    for name, mat in zip(names[1:], matrices[1:]):
        if mat.shape != shape:
            raise EnsembleError(
                f"{names[0]} has shape {shape} but {name} has shape {mat.shape}; ensemble members must "
                "score the same images and captions in the same order"
            )
    w = normalized_weights(weights, len(matrices))
    if out is None:
        out = np.empty(shape, dtype=np.result_type(np.float32, *(m.dtype for m in matrices)))
    elif out.shape != shape:
        raise EnsembleError(f"output has shape {out.shape}, expected {shape}")
    step = chunk_rows or max(1, _CHUNK_ELEMENTS // max(1, shape[1]))
    for r0 in range(0, shape[0], step):
        acc = np.zeros((min(step, shape[0] - r0), shape[1]), dtype=np.float64)
        for name, mat, wi in zip(names, matrices, w):
            block = np.asarray(mat[r0 : r0 + step], dtype=np.float64)
            bad = ~np.isfinite(block)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise EnsembleError(
                    f"{name}: entry (row {r0 + int(r)}, col {int(c)}) is {block[r, c]}; every score must "
                    "be finite (NaN usually means a zero-norm embedding or a diverged run)"
                )
            acc += wi * block
        out[r0 : r0 + step] = acc
    return out
