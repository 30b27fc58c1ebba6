"""Image-side encoder: precomputed region features -> embedded regions."""

from __future__ import annotations

from torch import Tensor, nn

from kgitm.core.batch import ImageInputs
from kgitm.core.functional import l2norm
from kgitm.core.types import EncodedImages


class RegionEncoder(nn.Module):
    """Projects precomputed region features (e.g. BUTD Faster R-CNN) into the joint space.

    As in SCAN/VSE++: optional l2 normalisation of the input features, a linear projection, and
    l2 normalisation of each projected region.

    Args:
        feature_dim: input feature size ``D_in`` (linked from the data module).
        embed_dim: joint embedding size ``D`` (default 1024).
        normalize_input: l2-normalise raw features before projecting (default False).
        normalize: l2-normalise the projected regions (default True).

    Shapes:
        input: :class:`~kgitm.core.batch.ImageInputs` with ``features (B, R, D_in)``, ``region_mask (B, R)``,
        optional ``boxes (B, R, 4)`` and ``graph`` (passed on as ``extra``).
        output: :class:`~kgitm.core.types.EncodedImages` with ``features (B, R, D)``.
    """

    def __init__(self, feature_dim: int, embed_dim: int = 1024, *, normalize_input: bool = False, normalize: bool = True) -> None:
        super().__init__()
        self.normalize_input = normalize_input
        self.normalize = normalize
        self.fc = nn.Linear(feature_dim, embed_dim)
        self.embed_dim = embed_dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier uniform as in SCAN's EncoderImagePrecomp
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, images: ImageInputs) -> EncodedImages:
        x: Tensor = images.features
        mask: Tensor = images.region_mask
        if self.normalize_input:
            x = l2norm(x)
        x = self.fc(x)
        if self.normalize:
            x = l2norm(x)
        x = x * mask.unsqueeze(-1).to(x.dtype)
        return EncodedImages(features=x, mask=mask, boxes=images.boxes, extra=images.graph)
