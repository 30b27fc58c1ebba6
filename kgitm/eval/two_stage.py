"""Two-stage retrieval: a fast global-embedding model shortlists, an expensive matcher re-ranks.

LightningDOT (Sun et al., NAACL 2021) ranks every candidate with a cheap dual encoder and lets the
expensive cross-attention model re-score only the top ``k`` of each query. Here the coarse model is
any similarity matrix (VSE++ in practice) and the expensive matcher is any callable scoring a block
of images against a block of captions (SCAN, GSMN, SGM through
:func:`kgitm.eval.similarity.compute_similarity`).

The two directions need different shortlists:

- image-to-text: for each image, its ``k_captions`` best captions under the coarse score;
- text-to-image: for each caption, its ``k_images`` best images under the coarse score.

The expensive matcher scores the *union* of both candidate sets once, grouped by image: for each
block of images, one call on the union of the captions any of those images needs. Each direction
then gets its own matrix in which the candidates keep their expensive score and every other pair
keeps its coarse score shifted below all re-ranked scores. With ``share_candidates`` (the default) a
pair scored for either direction is a candidate of both: an image that is not among a caption's
``k_images`` best can still reach that caption's shortlist because the caption is among the image's
``k_captions`` best. This costs no extra matcher evaluation and protects text-to-image queries from
hub images, which crowd the per-caption shortlists of a global-embedding model, so a query's ranking is: its re-ranked
candidates (ordered by the expensive score), then the rest (ordered by the coarse score). Ranks and
metrics are exactly those of :mod:`kgitm.eval.metrics` (same tie rule).

With ``coarse_weight = w > 0`` a candidate's score is ``(1 - w) * expensive + w * coarse``: the
weighted mean of :func:`kgitm.eval.ensemble.average_similarity` (what ``kgitm ensemble`` scores),
computed only on the shortlisted pairs. With full shortlists it is that ensemble exactly; with short
ones it is the ensemble's ranking of the coarse model's candidates, at the two-stage cost. Like any
ensemble it combines two models, and a table row that uses it must say so.

Shortlists break coarse ties by the lower index (a stable descending sort), like the metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from kgitm.eval.metrics import PROTOCOLS, Protocol, _check_layout, recall_metrics, retrieval_ranks

#: ``rerank(image_idx, caption_idx) -> scores``: the expensive matcher on a block, images by
#: captions. ``image_idx (b,)`` and ``caption_idx (u,)`` are int64 CPU tensors of matrix indices; the
#: result is ``(b, u)`` (any device and float dtype).
RerankFn = Callable[[Tensor, Tensor], Tensor]

# Gap between the lowest re-ranked score and the highest shifted coarse score.
_SHIFT_GAP = 1.0


@dataclass
class TwoStageScores:
    """The two matrices of a two-stage run and the matcher's work.

    Attributes:
        i2t: image-to-text matrix: per image row, its caption candidates hold expensive scores,
            the other captions shifted coarse scores. Rank its rows only.
        t2i: text-to-image matrix: per caption column, its image candidates hold expensive scores,
            the other images shifted coarse scores. Rank its columns only.
        candidates: bool mask of the pairs the expensive matcher scored for either direction.
        matcher_pairs: number of distinct candidate pairs (``candidates.sum()``).
        scored_pairs: pairs the matcher actually evaluated: the sum over image blocks of
            ``block images x union captions`` (equals ``matcher_pairs`` with ``image_block=1``).

    Shapes:
        i2t, t2i, candidates: ``(N, M)``; i2t and t2i are float64 on the CPU.
    """

    i2t: Tensor
    t2i: Tensor
    candidates: Tensor
    matcher_pairs: int
    scored_pairs: int


def top_k_mask(coarse: Tensor, k: int, *, dim: int) -> Tensor:
    """Bool mask of the ``k`` best entries along ``dim`` (ties: lower index first).

    Args:
        coarse: coarse scores.
        k: shortlist length, clamped to the size of ``dim``; must be ``>= 1``.
        dim: ``1`` for each image's best captions, ``0`` for each caption's best images.

    Shapes:
        coarse: ``(N, M)``. Output: ``(N, M)`` bool.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"shortlist length must be a positive int, got {k!r}")
    k = min(int(k), coarse.shape[dim])
    order = torch.sort(coarse, dim=dim, descending=True, stable=True).indices.narrow(dim, 0, k)
    mask = torch.zeros(coarse.shape, dtype=torch.bool)
    mask.scatter_(dim, order, True)
    return mask


def _shifted_coarse(coarse: Tensor, floor: float) -> Tensor:
    """Coarse scores moved (as float64) so that their maximum is ``floor - _SHIFT_GAP``."""
    c = coarse.to(torch.float64)
    return c + (floor - _SHIFT_GAP - float(c.max()))


def two_stage_similarity(
    coarse: Tensor,
    rerank: RerankFn,
    *,
    k_images: int,
    k_captions: int,
    image_block: int = 1,
    share_candidates: bool = True,
    coarse_weight: float = 0.0,
) -> TwoStageScores:
    """Re-rank the coarse shortlists of both directions with an expensive matcher.

    Args:
        coarse: the fast model's full similarity matrix, images by captions (any real dtype).
        rerank: the expensive matcher on a block (:data:`RerankFn`); called once per block of
            ``image_block`` consecutive images that has any candidate, on the sorted union of the
            captions those images need. Scores of a pair must not depend on the rest of the block.
        k_images: text-to-image shortlist: images re-ranked per caption (clamped to ``N``).
        k_captions: image-to-text shortlist: captions re-ranked per image (clamped to ``M``).
        image_block: images per matcher call (default ``1``: the matcher scores exactly the
            candidate pairs; larger blocks make fewer, larger calls that also score some
            non-candidate pairs, which are discarded and counted in ``scored_pairs``).
        share_candidates: re-rank each query over every scored pair of it, from either shortlist
            (default ``True``); ``False`` keeps each direction to its own shortlist.
        coarse_weight: weight ``w`` in ``[0, 1]`` of the coarse score in a candidate's score
            ``(1 - w) * expensive + w * coarse`` (default ``0``: the expensive score alone).

    Returns:
        :class:`TwoStageScores`.

    Raises:
        ValueError: ``coarse`` is not a finite 2-D matrix, a shortlist length or ``image_block`` is
            not a positive int, ``coarse_weight`` is outside ``[0, 1]``, or ``rerank`` returns the
            wrong shape or non-finite scores.

    Shapes:
        coarse: ``(N, M)``; rerank: ``(b,), (u,) -> (b, u)``.
    """
    coarse = torch.as_tensor(coarse).detach().cpu()
    if coarse.dim() != 2 or coarse.numel() == 0:
        raise ValueError(f"coarse similarity must be a non-empty 2-D (N, M) matrix, got shape {tuple(coarse.shape)}")
    if not torch.isfinite(coarse).all():
        raise ValueError("coarse similarity holds NaN/inf; fix the coarse model or its saved matrix")
    if isinstance(image_block, bool) or not isinstance(image_block, int) or image_block < 1:
        raise ValueError(f"image_block must be a positive int, got {image_block!r}")
    if not 0.0 <= float(coarse_weight) <= 1.0:
        raise ValueError(f"coarse_weight must lie in [0, 1] (the coarse score's share), got {coarse_weight!r}")
    n, m = coarse.shape
    i2t_mask = top_k_mask(coarse, k_captions, dim=1)
    t2i_mask = top_k_mask(coarse, k_images, dim=0)
    candidates = i2t_mask | t2i_mask

    rows, cols, vals = [], [], []
    scored = 0
    for i0 in range(0, n, image_block):
        block = candidates[i0 : i0 + image_block]  # (b, M)
        caption_idx = block.any(0).nonzero().squeeze(1)
        if caption_idx.numel() == 0:
            continue
        image_idx = torch.arange(i0, i0 + block.shape[0])
        scores = torch.as_tensor(rerank(image_idx, caption_idx)).detach().to("cpu", torch.float64)
        if scores.shape != (len(image_idx), len(caption_idx)):
            raise ValueError(
                f"rerank returned shape {tuple(scores.shape)} for {len(image_idx)} images x "
                f"{len(caption_idx)} captions; it must score the block images by captions"
            )
        scored += scores.numel()
        keep = block[:, caption_idx]  # (b, u): the candidate pairs of this block
        r, c = keep.nonzero(as_tuple=True)
        rows.append(image_idx[r])
        cols.append(caption_idx[c])
        vals.append(scores[r, c])
    row_t, col_t, val_t = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    if not torch.isfinite(val_t).all():
        raise ValueError("the expensive matcher returned NaN/inf scores; fix the re-ranking model")
    if coarse_weight:
        w = float(coarse_weight)
        val_t = (1.0 - w) * val_t + w * coarse[row_t, col_t].to(torch.float64)

    floor = float(val_t.min())
    base = _shifted_coarse(coarse, floor)
    out = {}
    if share_candidates:
        i2t_mask = t2i_mask = candidates
    for name, mask in (("i2t", i2t_mask), ("t2i", t2i_mask)):
        mat = base.clone()
        sel = mask[row_t, col_t]
        mat[row_t[sel], col_t[sel]] = val_t[sel]
        out[name] = mat
    return TwoStageScores(
        i2t=out["i2t"],
        t2i=out["t2i"],
        candidates=candidates,
        matcher_pairs=int(candidates.sum()),
        scored_pairs=scored,
    )


def scores_metrics(scores: TwoStageScores, captions_per_image: int = 5) -> dict[str, float]:
    """Retrieval metrics of one two-stage result: i2t ranks from the rows of ``scores.i2t``, t2i
    ranks from the columns of ``scores.t2i`` (keys of :func:`kgitm.eval.metrics.recall_metrics`).

    Args:
        scores: the output of :func:`two_stage_similarity`.
        captions_per_image: ``k`` (default ``5``).
    """
    i2t, _ = retrieval_ranks(scores.i2t.numpy(), captions_per_image)
    _, t2i = retrieval_ranks(scores.t2i.numpy(), captions_per_image)
    return recall_metrics(i2t, t2i)


def two_stage_metrics(
    coarse: Tensor,
    rerank: RerankFn,
    *,
    k_images: int,
    k_captions: int,
    captions_per_image: int = 5,
    protocol: Protocol = "single",
    fold_images: int = 1000,
    image_block: int = 1,
    share_candidates: bool = True,
    coarse_weight: float = 0.0,
) -> dict[str, Any]:
    """Retrieval metrics of two-stage retrieval, with the matcher's work.

    The image-to-text ranks come from the rows of the ``i2t`` matrix and the text-to-image ranks
    from the columns of the ``t2i`` matrix of :func:`two_stage_similarity`; with ``coco1k`` the
    shortlists are drawn inside each fold (each fold is its own gallery, as in the protocol).

    Args:
        coarse: the fast model's similarity matrix, captions of image ``i`` at columns
            ``k*i .. k*i+k-1``.
        rerank: the expensive matcher on a block (:data:`RerankFn`), full-matrix indices.
        k_images: images re-ranked per caption.
        k_captions: captions re-ranked per image.
        captions_per_image: ``k`` (default ``5``).
        protocol: ``"single"``, ``"coco1k"`` or ``"coco5k"`` (see
            :func:`kgitm.eval.metrics.evaluate_retrieval`).
        fold_images: images per fold for ``"coco1k"`` (default ``1000``).
        image_block: images per matcher call (see :func:`two_stage_similarity`).
        share_candidates: see :func:`two_stage_similarity` (default ``True``).
        coarse_weight: see :func:`two_stage_similarity` (default ``0``).

    Returns:
        The keys of :func:`kgitm.eval.metrics.evaluate_retrieval` (``"folds"`` for ``coco1k``), plus
        ``matcher_pairs`` (distinct pairs the expensive matcher scored), ``scored_pairs`` (pairs it
        evaluated, block fill included) and ``exhaustive_pairs`` (the pairs an exhaustive
        evaluation scores: ``N * M``, or the sum over folds for ``coco1k``). Counts are totals over
        folds.

    Shapes:
        coarse: ``(N, k * N)``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    coarse = torch.as_tensor(coarse).detach().cpu()
    n, _ = _check_layout(tuple(coarse.shape), captions_per_image)
    k = int(captions_per_image)
    if protocol == "coco1k":
        if n % fold_images:
            raise ValueError(
                f"coco1k needs N_img to be a multiple of fold_images={fold_images}, got N_img={n}"
            )
        spans = [(i0, i0 + fold_images) for i0 in range(0, n, fold_images)]
    else:
        spans = [(0, n)]

    folds, matcher_pairs, scored_pairs, exhaustive = [], 0, 0, 0
    for i0, i1 in spans:
        sub = coarse[i0:i1, k * i0 : k * i1]

        def fold_rerank(image_idx: Tensor, caption_idx: Tensor, i0: int = i0) -> Tensor:
            return rerank(image_idx + i0, caption_idx + k * i0)

        res = two_stage_similarity(
            sub,
            fold_rerank,
            k_images=k_images,
            k_captions=k_captions,
            image_block=image_block,
            share_candidates=share_candidates,
            coarse_weight=coarse_weight,
        )
        folds.append(scores_metrics(res, k))
        matcher_pairs += res.matcher_pairs
        scored_pairs += res.scored_pairs
        exhaustive += sub.numel()

    out: dict[str, Any]
    if protocol == "coco1k":
        out = {key: float(np.mean([f[key] for f in folds])) for key in folds[0]}
        out["folds"] = folds
    else:
        out = dict(folds[0])
    out["matcher_pairs"] = matcher_pairs
    out["scored_pairs"] = scored_pairs
    out["exhaustive_pairs"] = exhaustive
    return out
