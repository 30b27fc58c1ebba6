"""Loss terms: the training objective is the weighted sum of a configured list of them.

Each term is an ``nn.Module`` with a ``name`` (logged as ``train/{name}_loss``) and a ``weight``; it
receives the model, the batch and the model's :class:`~kgitm.models.matching.BatchOutput` and returns
its unweighted value, or ``None`` when the batch has nothing for it (no caption with a swappable
relation). A method's auxiliary loss is one more entry in ``model.loss`` of its config::

    loss:
      - class_path: kgitm.models.losses.RetrievalHinge
        init_args: {margin: 0.2, max_violation: true}
      - class_path: kgitm.models.losses.RelationSwapHinge
        init_args: {weight: 1.0, pairs: 8}

:class:`ContrastiveLoss` is the field's bidirectional hinge on a batch similarity matrix (VSE++,
SCAN, GSMN, SGM, CVSE); :class:`RetrievalHinge` is the term that applies it to the batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

import torch
from torch import Tensor, nn

from kgitm.core.batch import Batch
from kgitm.core.types import rotated_images

if TYPE_CHECKING:  # the model imports nothing from here; the terms only call its public methods
    from kgitm.models.matching import BatchOutput, MatchingModel


class ContrastiveLoss(nn.Module):
    """Bidirectional hinge loss with (optionally) the hardest negative only.

    ``[m + S(i, k) - S(i, i)]_+`` over negative captions ``k`` of image ``i`` and
    ``[m + S(k, i) - S(i, i)]_+`` over negative images, with the positives on the diagonal.
    Pairs whose image is the same (two captions of one image in a batch) are not negatives.

    Args:
        margin: ``m`` (0.2 in VSE++/SCAN/GSMN; SGM used 0.35).
        max_violation: keep only the hardest negative per query (VSE++), else sum all.
        reduction: ``"sum"`` over the batch (public code of SCAN, GSMN) or ``"mean"`` (SGM).

    Shapes:
        sims: ``(B, B)`` image x caption similarities; image_ids: ``(B,)`` optional.
    """

    def __init__(self, margin: float = 0.2, *, max_violation: bool = True, reduction: Literal["sum", "mean"] = "sum") -> None:
        super().__init__()
        self.margin = margin
        self.max_violation = max_violation
        self.reduction = reduction

    def forward(self, sims: Tensor, image_ids: Optional[Tensor] = None, *, max_violation: Optional[bool] = None) -> Tensor:
        hardest = self.max_violation if max_violation is None else max_violation
        diag = sims.diagonal()
        if image_ids is None:
            same = torch.eye(sims.shape[0], dtype=torch.bool, device=sims.device)
        else:
            same = image_ids.unsqueeze(0) == image_ids.unsqueeze(1)
        cost_c = (self.margin + sims - diag.unsqueeze(1)).clamp_min(0).masked_fill(same, 0)  # image i, caption k
        cost_i = (self.margin + sims - diag.unsqueeze(0)).clamp_min(0).masked_fill(same, 0)  # caption k, image i
        if hardest:
            per_item = cost_c.amax(1) + cost_i.amax(0)
        else:
            per_item = cost_c.sum(1) + cost_i.sum(0)
        return per_item.sum() if self.reduction == "sum" else per_item.mean()


class LossTerm(nn.Module):
    """One term of the training objective.

    Args:
        weight: the term's factor in the sum (default ``1.0``).
    """

    #: the term's name in the logs (``train/{name}_loss``)
    name: str = "loss"

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"{type(self).__name__}: weight must be >= 0, got {weight}")
        self.weight = weight

    def forward(self, model: "MatchingModel", batch: Batch, out: "BatchOutput", *, epoch: int) -> Optional[Tensor]:
        """The term's unweighted value, or ``None`` when the batch has nothing for it."""
        raise NotImplementedError


class RetrievalHinge(LossTerm):
    """The retrieval hinge (:class:`ContrastiveLoss`) on the batch similarity matrix.

    Args:
        margin: ``m`` (0.2 in VSE++/SCAN/GSMN; SGM used 0.35).
        max_violation: the hardest negative per query only (VSE++), else the sum over all.
        reduction: ``"sum"`` over the batch (SCAN, GSMN code) or ``"mean"`` (SGM).
        warmup_epochs: sum over all negatives for this many epochs before using the hardest only (a
            VSE-infinity practice; 0 in VSE++, SCAN and GSMN). (default: ``0``)
        weight: the term's factor (default ``1.0``).
    """

    name = "retrieval"

    def __init__(
        self,
        margin: float = 0.2,
        *,
        max_violation: bool = True,
        reduction: Literal["sum", "mean"] = "sum",
        warmup_epochs: int = 0,
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        if warmup_epochs < 0:
            raise ValueError(f"RetrievalHinge: warmup_epochs must be >= 0, got {warmup_epochs}")
        self.hinge = ContrastiveLoss(margin, max_violation=max_violation, reduction=reduction)
        self.warmup_epochs = warmup_epochs

    @property
    def margin(self) -> float:
        return self.hinge.margin

    def forward(self, model: "MatchingModel", batch: Batch, out: "BatchOutput", *, epoch: int) -> Tensor:
        hardest = self.hinge.max_violation and epoch >= self.warmup_epochs
        return self.hinge(out.sims, batch.image_index, max_violation=hardest)


def _swap_rows(batch: Batch, term: str, pairs: int) -> Tensor:
    if batch.swap_valid is None or batch.swapped is None:
        raise ValueError(
            f"{term} needs the captions' relation-swapped copies in the batch: set data.relation_swap_negatives true "
            "(and data.graph_store)"
        )
    return batch.swap_valid.nonzero().flatten()[:pairs]


class PairHinge(LossTerm):
    """Base of the hinges that pit a caption's positive pair against one hard negative made for it:
    ``[m - S_pos + S_neg]_+`` over at most ``pairs`` captions of a batch, reduced by ``reduction``.
    Subclasses implement :meth:`scores`.

    Args:
        weight: the term's factor (default ``1.0``).
        pairs: captions per batch that enter the term (default 8).
        margin: ``m`` (default 0.2).
        reduction: ``"sum"`` over the pairs used (default: as the retrieval hinge of VSE++, SCAN and
            GSMN sums over the batch, so that each pair weighs as much as one caption's retrieval
            term) or ``"mean"`` (kgitm 0.1's, which made a pair weigh ``1 / pairs`` of that).
    """

    def __init__(self, weight: float = 1.0, *, pairs: int = 8, margin: float = 0.2, reduction: Literal["sum", "mean"] = "sum") -> None:
        super().__init__(weight)
        if pairs < 1:
            raise ValueError(f"{type(self).__name__}: pairs must be >= 1, got {pairs}; remove the term to turn it off")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'sum' or 'mean', got {reduction!r}")
        self.pairs, self.margin, self.reduction = pairs, margin, reduction

    def scores(self, model: "MatchingModel", batch: Batch, out: "BatchOutput") -> Optional[tuple[Tensor, Tensor]]:
        """``(positive, negative)`` scores of the term's captions, or ``None`` when none qualifies."""
        raise NotImplementedError

    def forward(self, model: "MatchingModel", batch: Batch, out: "BatchOutput", *, epoch: int) -> Optional[Tensor]:
        scores = self.scores(model, batch, out)
        if scores is None:
            return None
        cost = (self.margin - scores[0] + scores[1]).clamp_min(0)
        return cost.sum() if self.reduction == "sum" else cost.mean()


class RelationSwapHinge(PairHinge):
    """Hinge between each caption and its relation-swapped copy on the caption's own image:
    ``[m - S(i, c) + S(i, swap(c))]_+`` over the first ``pairs`` captions of the batch that have a swap
    (:mod:`kgitm.pipeline.hard_negatives`; needs ``data.relation_swap_negatives``).

    Args:
        weight: the term's factor (default ``1.0``).
        pairs: how many of a batch's captions with a swap enter the term (default 8): scoring ``n``
            swaps costs an ``n x n`` block of the matcher, so a few per batch keep the step's cost
            close to that of the plain loss.
        margin: ``m`` (default 0.2).
        reduction: ``"sum"`` (default) or ``"mean"`` over the pairs (:class:`PairHinge`).
    """

    name = "relation_swap"

    def scores(self, model: "MatchingModel", batch: Batch, out: "BatchOutput") -> Optional[tuple[Tensor, Tensor]]:
        """``(S(i, c), S(i, swap(c)))`` of the term's captions on their own image."""
        rows = _swap_rows(batch, "RelationSwapHinge", self.pairs)
        if rows.numel() == 0:
            return None
        own = out.images.index(rows)
        positive = out.sims[rows, rows] if out.sims is not None else model.score(own, out.captions.index(rows)).diagonal()
        return positive, model.score(own, model.encode_captions(batch.swapped.index(rows))).diagonal()


class RotatedImageHinge(PairHinge):
    """The caption's own image with its boxes rotated by 180 degrees as a negative:
    ``[m - S(i, c) + S(rot(i), c)]_+``, for the captions of :class:`RelationSwapHinge` (those with a
    swappable relation, see ``data.swap_predicates``). Every directional relation of the caption is
    false on the rotated image while the region features are unchanged, so only box geometry can tell
    the two images apart.

    Args:
        weight: the term's factor (default ``1.0``).
        pairs: captions per batch (default 8).
        margin: ``m`` (default 0.2).
        reduction: ``"sum"`` (default) or ``"mean"`` over the pairs (:class:`PairHinge`).
    """

    name = "rotated_image"

    def scores(self, model: "MatchingModel", batch: Batch, out: "BatchOutput") -> Optional[tuple[Tensor, Tensor]]:
        """``(S(i, c), S(rot(i), c))`` of the term's captions on their own image and on that image
        rotated; ``None`` when no caption of the batch qualifies. ``out.sims`` may be ``None`` (the
        positives are then scored here, without the rest of the batch matrix)."""
        rows = _swap_rows(batch, "RotatedImageHinge", self.pairs)
        if rows.numel() == 0:
            return None
        own, caps = out.images.index(rows), out.captions.index(rows)
        positive = out.sims[rows, rows] if out.sims is not None else model.score(own, caps).diagonal()
        return positive, model.score(rotated_images(own), caps).diagonal()


def _cora_embeddings(model: "MatchingModel", out: "BatchOutput", term: str):
    embeddings = getattr(model.matcher, "embeddings", None)
    if not callable(embeddings):
        raise ValueError(
            f"{term} needs CORA's entity embeddings: set model.matcher to kgitm.matchers.cora.CORA "
            f"(got {type(model.matcher).__name__})"
        )
    return embeddings(out.images, out.captions)


class CoraContrastive(LossTerm):
    """CORA's supervised contrastive loss of images against captions and entities (Pham et al., CVPR
    2024; the release's ``supcon_joint_caption_entity_loss``).

    Every image is an anchor over the batch's captions and entities (the entity composer's outputs of
    each caption's objects), and every caption and entity is an anchor over the images; positives are
    the pairs of the same image (``batch.image_index``). With ``s = v^T t / tau`` and, per anchor ``a``
    and positive ``p``, ``log P(p) = s_ap - log(exp(s_ap) + sum_{n negative} exp(s_an))`` (the other
    positives left out of the denominator, as the release), the loss is the mean over anchors of the
    mean ``-log P`` over their positives, summed over both directions.

    Args:
        temperature: ``tau``. (default: ``0.01``, the release's)
        weight: the term's factor. (default: ``1.0``)
    """

    name = "cora_contrastive"

    def __init__(self, temperature: float = 0.01, *, weight: float = 1.0) -> None:
        super().__init__(weight)
        if temperature <= 0:
            raise ValueError(f"CoraContrastive: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    @staticmethod
    def _side(scores: Tensor, positive: Tensor) -> Tensor:
        negatives = torch.logsumexp(scores.masked_fill(positive, float("-inf")), dim=1, keepdim=True)
        log_prob = scores - torch.logaddexp(scores, negatives)
        per_anchor = (log_prob * positive).sum(1) / positive.sum(1)
        return -per_anchor.mean()

    def forward(self, model: "MatchingModel", batch: Batch, out: "BatchOutput", *, epoch: int) -> Tensor:
        emb = _cora_embeddings(model, out, "CoraContrastive")
        image_ids = batch.image_index.to(emb.image.device)
        rows = emb.entity_mask.nonzero()[:, 0]
        targets = torch.cat([emb.caption, emb.entity[emb.entity_mask]])
        target_image = torch.cat([image_ids, image_ids[rows]])
        scores = emb.image @ targets.T / self.temperature
        positive = image_ids.unsqueeze(1) == target_image.unsqueeze(0)
        return self._side(scores, positive) + self._side(scores.T, positive.T)


class EntitySpecificityHinge(LossTerm):
    """CORA's specificity loss: an image must score its caption above each of that caption's entities,
    ``[s(i, e) + m - s(i, c)]_+`` averaged over the entities ``e`` of caption ``c`` of image ``i`` (the
    release's ``triplet_specificity_loss``). ``None`` when the batch has no entity.

    Args:
        margin: ``m``. (default: ``0.35``, the release's)
        weight: the term's factor. (default: ``1.0``; the release uses 11)
    """

    name = "cora_specificity"

    def __init__(self, margin: float = 0.35, *, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.margin = margin

    def forward(self, model: "MatchingModel", batch: Batch, out: "BatchOutput", *, epoch: int) -> Optional[Tensor]:
        emb = _cora_embeddings(model, out, "EntitySpecificityHinge")
        if not emb.entity_mask.any():
            return None
        caption_score = (emb.image * emb.caption).sum(-1, keepdim=True)  # (B, 1)
        entity_score = torch.einsum("bd,bod->bo", emb.image, emb.entity)
        cost = (entity_score + self.margin - caption_score).clamp_min(0)
        return cost[emb.entity_mask].mean()
