"""Hinge triplet loss on a batch similarity matrix (VSE++, SCAN, GSMN, SGM, CVSE)."""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor, nn


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
