"""The model layer: :class:`MatchingModel` (encoders + knowledge + matcher, plain PyTorch) and the loss
terms a trainer sums (:mod:`kgitm.models.losses`)."""

from kgitm.models.losses import ContrastiveLoss, LossTerm, PairHinge, RelationSwapHinge, RetrievalHinge, RotatedImageHinge
from kgitm.models.matching import BatchOutput, EncodedSplit, MatchingModel, SplitEncoder

__all__ = [
    "BatchOutput",
    "ContrastiveLoss",
    "EncodedSplit",
    "LossTerm",
    "MatchingModel",
    "PairHinge",
    "RelationSwapHinge",
    "RetrievalHinge",
    "RotatedImageHinge",
    "SplitEncoder",
]
