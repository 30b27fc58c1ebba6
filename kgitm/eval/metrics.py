"""Retrieval metrics for image-text matching, exactly as the field reports them.

A similarity matrix ``S`` of shape ``(N_img, N_cap)`` holds the score of every image-caption pair,
with the ``k`` captions of image ``i`` at columns ``k*i .. k*i+k-1`` (the "precomp" layout of SCAN
and its successors: ``N_cap == k * N_img``).

- Image-to-text (i2t): the rank of image ``i`` is the best (smallest) rank among its ``k``
  ground-truth captions when all ``N_cap`` captions are sorted by score.
- Text-to-image (t2i): the rank of caption ``j`` is the rank of its image ``j // k`` among all
  ``N_img`` images.
- Ranks are 0-based; ``R@K = 100 * mean(rank < K)``, ``medr = floor(median(rank)) + 1``,
  ``meanr = mean(rank) + 1`` and ``rsum`` is the true sum of the six recalls (the public SCAN, GSMN,
  SGRAF and CVSE code prints 6x the mean i2t recall for COCO 1K and VSE++ prints 6x the sum; both
  are wrong).

**Ties.** The rank of a ground-truth item with score ``s`` at index ``g`` is the number of
candidates scoring strictly higher than ``s`` plus the number of candidates scoring exactly ``s``
whose index is lower than ``g``. This is the position of ``g`` after a *stable* descending sort,
i.e. the public ``argsort``-based code made deterministic; it does not depend on the sort
algorithm and never favours the ground truth over an earlier tied candidate.

Ranks are computed in row chunks with no Python loop over images or captions, so a
``5000 x 25000`` float32 matrix (also a read-only ``np.load(..., mmap_mode="r")`` memmap) is ranked
without materialising full-size temporaries.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

Protocol = Literal["single", "coco1k", "coco5k"]

PROTOCOLS: tuple[str, ...] = ("single", "coco1k", "coco5k")

RECALL_KS: tuple[int, ...] = (1, 5, 10)

#: The keys of :func:`recall_metrics` (and of :func:`evaluate_retrieval`, plus ``"folds"`` for
#: ``coco1k``), in reporting order.
METRIC_KEYS: tuple[str, ...] = (
    "i2t_r1",
    "i2t_r5",
    "i2t_r10",
    "i2t_medr",
    "i2t_meanr",
    "t2i_r1",
    "t2i_r5",
    "t2i_r10",
    "t2i_medr",
    "t2i_meanr",
    "rsum",
)

# Elements per row chunk: a few boolean temporaries of this size are alive at once (~4 MB each).
_CHUNK_ELEMENTS = 1 << 22


def _check_layout(shape: tuple[int, ...], captions_per_image: int) -> tuple[int, int]:
    """Validate ``shape`` against the ``(N_img, k * N_img)`` layout and return ``(N_img, N_cap)``."""
    if isinstance(captions_per_image, bool) or not isinstance(captions_per_image, (int, np.integer)):
        raise TypeError(f"captions_per_image must be an int, got {type(captions_per_image).__name__}")
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image must be >= 1, got {captions_per_image}")
    if len(shape) != 2:
        raise ValueError(
            f"similarity matrix must be 2-D (N_img, N_cap), got shape {tuple(shape)}; "
            "pass one matrix of image-caption scores"
        )
    n_img, n_cap = int(shape[0]), int(shape[1])
    if n_img == 0:
        raise ValueError(f"similarity matrix has no images (shape {tuple(shape)})")
    expected = (n_img, captions_per_image * n_img)
    if n_cap != expected[1]:
        hint = ""
        if n_img == captions_per_image * n_cap:
            hint = " (the transposed matrix would fit: pass images as rows, captions as columns)"
        raise ValueError(
            f"similarity matrix has shape {(n_img, n_cap)} but captions_per_image="
            f"{captions_per_image} requires shape {expected} (N_cap == captions_per_image * N_img, "
            f"captions of image i at columns k*i..k*i+k-1){hint}"
        )
    return n_img, n_cap


def _raise_if_not_finite(block: np.ndarray, row_offset: int) -> None:
    """Raise a ``ValueError`` naming the first non-finite entry of ``block`` (row-major order)."""
    if not np.issubdtype(block.dtype, np.inexact):
        return
    finite = np.isfinite(block)
    if finite.all():
        return
    r, c = np.argwhere(~finite)[0]
    raise ValueError(
        f"similarity matrix must be finite, but entry (row {row_offset + int(r)}, col {int(c)}) is "
        f"{float(block[r, c])}; fix the model or the saved scores (NaN usually means a zero-norm "
        "embedding or a diverged run)"
    )


def _default_chunk_rows(n_cap: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, n_cap))


def _check_finite(sims: np.ndarray, *, chunk_rows: int | None = None) -> None:
    """Chunked finiteness check of a whole (possibly memory-mapped) matrix."""
    n_img, n_cap = sims.shape
    step = chunk_rows or _default_chunk_rows(n_cap)
    for r0 in range(0, n_img, step):
        _raise_if_not_finite(np.asarray(sims[r0 : r0 + step]), r0)


def _as_matrix(sims: Any) -> np.ndarray:
    if isinstance(sims, np.ndarray):  # includes np.memmap: keep it lazy
        return sims
    if hasattr(sims, "detach"):  # a torch tensor
        sims = sims.detach().cpu().numpy()
    return np.asarray(sims)


def _ranks(
    sims: np.ndarray, k: int, *, chunk_rows: int | None, check_finite: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Chunked rank computation (see :func:`retrieval_ranks`); ``sims`` already validated."""
    n_img, n_cap = sims.shape
    step = chunk_rows or _default_chunk_rows(n_cap)
    if step < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    cap_idx = np.arange(n_cap)
    img_of_cap = cap_idx // k
    # Ground-truth score of every caption, S[j // k, j] (a gather, cheap on a memmap too).
    gt = np.asarray(sims[img_of_cap, cap_idx])

    i2t = np.empty(n_img, dtype=np.int64)
    t2i = np.zeros(n_cap, dtype=np.int64)
    for r0 in range(0, n_img, step):
        r1 = min(n_img, r0 + step)
        block = np.asarray(sims[r0:r1])  # (B, N_cap)
        if check_finite:
            _raise_if_not_finite(block, r0)
        rows = np.arange(r0, r1)
        local = np.arange(r1 - r0)

        # --- image-to-text: best ground-truth caption of each row ---------------------------
        gt_cols = k * rows[:, None] + np.arange(k)[None, :]  # (B, k)
        gt_scores = block[local[:, None], gt_cols]
        best = gt_scores.max(axis=1)  # (B,)
        best_col = k * rows + gt_scores.argmax(axis=1)  # lowest index among tied GT maxima
        higher = np.count_nonzero(block > best[:, None], axis=1)
        # Tied candidates with a lower index: columns left of the chunk's caption band always
        # count, inside the band only those left of the row's best ground-truth column.
        left = k * r0
        band = slice(k * r0, k * r1)
        ties = np.count_nonzero(block[:, :left] == best[:, None], axis=1)
        ties += np.count_nonzero(
            (block[:, band] == best[:, None]) & (cap_idx[None, band] < best_col[:, None]), axis=1
        )
        i2t[r0:r1] = higher + ties

        # --- text-to-image: every caption's own image against the chunk's rows --------------
        t2i += np.count_nonzero(block > gt[None, :], axis=0)
        # Tied images with a lower index than the caption's image: captions right of the band
        # belong to later images (every chunk row counts), inside the band only earlier rows.
        t2i[k * r1 :] += np.count_nonzero(block[:, k * r1 :] == gt[None, k * r1 :], axis=0)
        t2i[band] += np.count_nonzero(
            (block[:, band] == gt[None, band]) & (rows[:, None] < img_of_cap[None, band]), axis=0
        )
    return i2t, t2i


def retrieval_ranks(
    sims: np.ndarray,
    captions_per_image: int = 5,
    *,
    chunk_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """0-based image-to-text and text-to-image ranks of a similarity matrix.

    Ties follow the documented deterministic rule: rank = number of candidates scoring strictly
    higher than the ground truth + number of tied candidates with a lower index (the position in
    a stable descending sort). Computed in row chunks without a Python loop over items.

    Args:
        sims: image-caption scores, captions of image ``i`` at columns ``k*i .. k*i+k-1``.
            Any real dtype; a read-only memmap is read one chunk at a time.
        captions_per_image: ``k`` (default ``5``).
        chunk_rows: image rows per chunk (default: about 4M matrix entries per chunk).
            Only changes memory use and speed, never the result.

    Returns:
        ``(i2t_ranks, t2i_ranks)`` as int64 arrays.

    Raises:
        ValueError: the matrix is not ``(N_img, k * N_img)`` or holds NaN/inf (naming the first
            offending ``(row, col)``).

    Shapes:
        - sims: ``(N_img, N_cap)`` with ``N_cap = k * N_img``
        - i2t_ranks: ``(N_img,)``
        - t2i_ranks: ``(N_cap,)``
    """
    sims = _as_matrix(sims)
    _check_layout(sims.shape, captions_per_image)
    return _ranks(sims, int(captions_per_image), chunk_rows=chunk_rows, check_finite=True)


def _ranks_1d(ranks: Any, name: str) -> np.ndarray:
    arr = np.asarray(ranks)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of ranks, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.any(arr < 0) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must hold finite 0-based ranks (>= 0); see retrieval_ranks")
    return arr


def _direction_metrics(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    out = {f"{prefix}_r{k}": float(100.0 * np.mean(ranks < k)) for k in RECALL_KS}
    out[f"{prefix}_medr"] = float(np.floor(np.median(ranks)) + 1)
    out[f"{prefix}_meanr"] = float(np.mean(ranks) + 1)
    return out


def recall_metrics(i2t_ranks: np.ndarray, t2i_ranks: np.ndarray) -> dict[str, float]:
    """Recall@{1,5,10}, median and mean rank in both directions, and RSUM.

    ``R@K = 100 * mean(rank < K)``, ``medr = floor(median(rank)) + 1``, ``meanr = mean(rank) + 1``
    (ranks 0-based, reported 1-based), ``rsum`` = the sum of the six recalls.

    Args:
        i2t_ranks: 0-based rank of each image's best ground-truth caption.
        t2i_ranks: 0-based rank of each caption's image.

    Returns:
        A dict with exactly the keys of :data:`METRIC_KEYS`, values plain Python floats.

    Shapes:
        - i2t_ranks: ``(N_img,)``
        - t2i_ranks: ``(N_cap,)``
    """
    out = _direction_metrics(_ranks_1d(i2t_ranks, "i2t_ranks"), "i2t")
    out |= _direction_metrics(_ranks_1d(t2i_ranks, "t2i_ranks"), "t2i")
    out["rsum"] = float(sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in RECALL_KS))
    return {key: out[key] for key in METRIC_KEYS}


def evaluate_retrieval(
    sims: np.ndarray,
    captions_per_image: int = 5,
    protocol: Protocol = "single",
    *,
    fold_images: int = 1000,
    chunk_rows: int | None = None,
) -> dict[str, Any]:
    """Score a similarity matrix with one of the standard retrieval protocols.

    - ``"single"``: the whole matrix (Flickr30K test: 1,000 images / 5,000 captions).
    - ``"coco5k"``: the same computation on the whole 5K matrix (kept as a name for clarity).
    - ``"coco1k"``: consecutive folds of ``fold_images`` images and their
      ``k * fold_images`` captions along the diagonal (COCO 1K: five folds of the 5K test set).
      Every metric is the mean over folds, ``rsum`` is the mean of the fold RSUMs (which equals
      the sum of the averaged recalls, not 6x the mean i2t recall), and ``"folds"`` holds the
      per-fold results.

    Args:
        sims: image-caption scores, captions of image ``i`` at columns ``k*i .. k*i+k-1``.
        captions_per_image: ``k`` (default ``5``).
        protocol: ``"single"``, ``"coco1k"`` or ``"coco5k"`` (default ``"single"``).
        fold_images: images per fold for ``"coco1k"`` (default ``1000``); ``N_img`` must be a
            multiple of it.
        chunk_rows: see :func:`retrieval_ranks`.

    Returns:
        The :data:`METRIC_KEYS` as plain floats (JSON-serialisable); for ``"coco1k"`` also
        ``"folds"``, a list of such dicts.

    Raises:
        ValueError: bad layout, non-finite scores, unknown protocol or a fold size that does not
            divide ``N_img``.

    Shapes:
        - sims: ``(N_img, N_cap)`` with ``N_cap = k * N_img``
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    sims = _as_matrix(sims)
    n_img, _ = _check_layout(sims.shape, captions_per_image)
    k = int(captions_per_image)
    if protocol in ("single", "coco5k"):
        i2t, t2i = _ranks(sims, k, chunk_rows=chunk_rows, check_finite=True)
        return dict(recall_metrics(i2t, t2i))

    is_int = isinstance(fold_images, (int, np.integer)) and not isinstance(fold_images, bool)
    if not is_int or fold_images < 1:
        raise ValueError(f"fold_images must be a positive int, got {fold_images!r}")
    if n_img % fold_images:
        raise ValueError(
            f"coco1k needs N_img to be a multiple of fold_images={fold_images}, got N_img={n_img}; "
            "pass the full 5K test matrix or change fold_images (--fold-images)"
        )
    # Off-diagonal blocks are not scored by coco1k, but a non-finite score anywhere means a broken
    # matrix: check the whole thing so the reported (row, col) is in full-matrix coordinates.
    _check_finite(sims, chunk_rows=chunk_rows)
    folds = []
    for f in range(n_img // fold_images):
        i0, i1 = f * fold_images, (f + 1) * fold_images
        i2t, t2i = _ranks(sims[i0:i1, k * i0 : k * i1], k, chunk_rows=chunk_rows, check_finite=False)
        folds.append(recall_metrics(i2t, t2i))
    out: dict[str, Any] = {key: float(np.mean([fold[key] for fold in folds])) for key in METRIC_KEYS}
    out["folds"] = folds
    return out


def pairwise_accuracy(positive: np.ndarray, negative: np.ndarray) -> float:
    """Percent of pairs whose true caption scores strictly higher than its negative.

    Used for the diagnostic sets (relation swap, attribute swap): ``positive[n]`` is the score of
    the true caption and ``negative[n]`` that of its perturbed twin for the same image. A tie counts
    as a failure (a model that cannot tell the two apart gets no credit).

    Args:
        positive: scores of the true captions.
        negative: scores of the matching negatives.

    Returns:
        ``100 * mean(positive > negative)`` as a Python float.

    Shapes:
        - positive: ``(P,)`` (any shape, equal to ``negative``'s)
        - negative: ``(P,)``
    """
    pos = _as_matrix(positive)
    neg = _as_matrix(negative)
    if pos.shape != neg.shape:
        raise ValueError(
            f"positive and negative scores must have the same shape, got {pos.shape} and {neg.shape}"
        )
    if pos.size == 0:
        raise ValueError("pairwise_accuracy needs at least one (positive, negative) pair")
    for name, arr in (("positive", pos), ("negative", neg)):
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(f"{name} scores must be finite, but entry {first} is {float(arr[first])}")
    return float(100.0 * np.mean(pos > neg))
