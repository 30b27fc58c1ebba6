"""CVSE's concept-graph normalisation (Wang et al., "Consensus-Aware Visual-Semantic Embedding",
ECCV 2020), implemented once for every caller (the CVSE source, the co-occurrence source, the
``build-concepts`` job).

From concept counts ``n`` (``nums``) and caption-level co-occurrence counts ``C`` (``adj_all``):

1. conditional probability ``P[i, j] = C[i, j] / n[i]`` (row ``i`` divided by the count of concept ``i``);
2. rescale ``E = base^(P - offset) - base^(-offset)`` (``base = 5``, ``offset = 0.02``);
3. binarise ``B = (E >= threshold)`` (``threshold = 0.3``);
4. scale each column to sum to ``column_mass``: ``B * column_mass / (B.sum(0) + eps)`` (0.25, 1e-6);
5. add the identity: ``A = B + I``;
6. ``D A^T D`` with ``D = diag(A.sum(1))^-1/2``.

Every step runs in float32, as the released code does after its final ``.float()``; steps 1-5 are in
float64 in the release, which changes nothing after binarisation except rounding in step 4, so this
module does them in float64 too and casts before step 6. The result is in general not symmetric (the
column scaling is not symmetric): row ``i`` of the result aggregates ``A[:, i]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["cvse_normalize", "cvse_normalize_file", "load_cvse_counts"]


def cvse_normalize(
    counts: np.ndarray,
    cooccurrence: np.ndarray,
    *,
    threshold: float = 0.3,
    base: float = 5.0,
    offset: float = 0.02,
    column_mass: float = 0.25,
    eps: float = 1e-6,
) -> np.ndarray:
    """Normalised CVSE adjacency from concept counts and co-occurrence counts.

    Args:
        counts: occurrences of each concept (``nums``); a concept with count 0 gets an all-zero row
            of conditional probabilities (the released files have none).
        cooccurrence: caption-level co-occurrence counts (``adj_all``).
        threshold: binarisation threshold ``t`` on the rescaled probabilities (default 0.3).
        base: base of the exponential rescaling (default 5).
        offset: offset of the exponential rescaling (default 0.02).
        column_mass: each column of the binarised matrix is scaled to sum to this (default 0.25).
        eps: added to the column sums before dividing (default 1e-6).

    Returns:
        ``(C, C)`` float32 matrix ``D A^T D``.

    Shapes:
        counts: ``(C,)``; cooccurrence: ``(C, C)``; output ``(C, C)``.
    """
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    cooc = np.asarray(cooccurrence, dtype=np.float64)
    num = counts.shape[0]
    if cooc.shape != (num, num):
        raise ValueError(f"co-occurrence matrix has shape {cooc.shape}, expected ({num}, {num}) from the counts")
    rows = counts[:, None]
    prob = np.divide(cooc, rows, out=np.zeros_like(cooc), where=rows > 0)
    rescaled = np.power(base, prob - offset) - np.power(base, -offset)
    binary = (rescaled >= threshold).astype(np.float64)
    binary = binary * column_mass / (binary.sum(0, keepdims=True) + eps)
    adj = (binary + np.identity(num)).astype(np.float32)
    d = np.power(adj.sum(1), np.float32(-0.5)).astype(np.float32)
    # (A D)^T D == D A^T D, the order the release multiplies in
    return ((adj * d[None, :]).T * d[None, :]).astype(np.float32)


def load_cvse_counts(path: str | Path) -> dict[str, np.ndarray]:
    """Read a CVSE ``*_adj_concepts.pkl`` file (``nums``, ``adj_all``, ``adj_O_P``, ``adj_O_M``) safely.

    Raises:
        ValueError: the file lacks ``nums`` or ``adj_all`` or their shapes disagree.
    """
    from kgitm.core.safe_pickle import safe_load

    data = safe_load(path)
    if not isinstance(data, dict) or "nums" not in data or "adj_all" not in data:
        raise ValueError(f"{path}: not a CVSE adjacency file (expected a dict with 'nums' and 'adj_all')")
    nums = np.asarray(data["nums"])
    if np.asarray(data["adj_all"]).shape != (nums.shape[0], nums.shape[0]):
        raise ValueError(f"{path}: 'adj_all' has shape {np.shape(data['adj_all'])}, expected {(nums.shape[0],) * 2}")
    return {k: np.asarray(v) for k, v in data.items()}


def cvse_normalize_file(path: str | Path, **kwargs: float) -> np.ndarray:
    """:func:`cvse_normalize` of a CVSE ``*_adj_concepts.pkl`` file (keyword arguments passed on)."""
    data = load_cvse_counts(path)
    return cvse_normalize(data["nums"], data["adj_all"], **kwargs)
