"""Image-side encoder: precomputed region features -> embedded regions."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from kgitm.core.batch import ImageInputs
from kgitm.core.functional import l2norm
from kgitm.core.types import EncodedImages


class RegionMLP(nn.Module):
    """A per-region MLP with batch normalisation after every hidden layer: ``Linear -> BN -> ReLU`` repeated,
    then a last ``Linear`` (VSE-infinity's precomp branch, release ``lib/modules/mlp.py`` ``MLP``).

    Batch statistics are taken over the valid regions only, so padding never changes a valid region's output
    (the release normalises over every row of its zero-padded batch). Parameter names follow the release
    (``layers.{i}``, ``bns.{i}``); its extra ``bns.{last}``, created but never applied, has no counterpart.

    Args:
        in_dim: input size ``D_in``.
        hidden_dim: hidden size ``H``.
        out_dim: output size ``D``.
        num_layers: linear layers (default 2).

    Shapes:
        features ``(B, R, D_in)``, mask ``(B, R)`` -> ``(B, R, D)``, zeros at padded regions.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"RegionMLP: num_layers must be >= 1, got {num_layers}")
        sizes = [in_dim, *[hidden_dim] * (num_layers - 1), out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.bns = nn.ModuleList(nn.BatchNorm1d(hidden_dim) for _ in range(num_layers - 1))
        self.out_dim = out_dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the release keeps PyTorch's default initialisation (its init_weights touches fc only)
        for layer in self.layers:
            layer.reset_parameters()
        for bn in self.bns:
            bn.reset_parameters()

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        h = features[mask]  # (V, D_in): the valid regions of the batch
        for layer, bn in zip(self.layers[:-1], self.bns):
            h = bn(layer(h)).relu()
        h = self.layers[-1](h)
        out = h.new_zeros(*mask.shape, self.out_dim)
        out[mask] = h
        return out


class RegionEncoder(nn.Module):
    """Projects precomputed region features (e.g. BUTD Faster R-CNN) into the joint space.

    As in SCAN/VSE++: optional l2 normalisation of the input features, a linear projection, and
    l2 normalisation of each projected region. VSE-infinity's precomp encoder (Chen et al., CVPR 2021;
    release ``lib/encoders.py`` ``EncoderImageAggr``, ``precomp_enc_type basic``) adds a two-layer MLP of the
    same input to the projection, ``fc(x) + mlp(x)`` (``residual_mlp=True``), and leaves the regions
    unnormalised (``normalize=False``; the pooled vector is l2-normalised by the matcher).

    Args:
        feature_dim: input feature size ``D_in`` (linked from the data module).
        embed_dim: joint embedding size ``D`` (default 1024).
        normalize_input: l2-normalise raw features before projecting (default False).
        normalize: l2-normalise the projected regions (default True).
        residual_mlp: add a :class:`RegionMLP` branch on the (possibly normalised) input features to the
            projection (default False).
        mlp_hidden_dim: the branch's hidden size ``H`` (default ``None``: ``embed_dim // 2``, the release's).
        mlp_layers: the branch's linear layers (default 2, the release's).

    Shapes:
        input: :class:`~kgitm.core.batch.ImageInputs` with ``features (B, R, D_in)``, ``region_mask (B, R)``,
        optional ``boxes (B, R, 4)`` and ``graph`` (passed on as ``extra``).
        output: :class:`~kgitm.core.types.EncodedImages` with ``features (B, R, D)``.
    """

    def __init__(
        self,
        feature_dim: int,
        embed_dim: int = 1024,
        *,
        normalize_input: bool = False,
        normalize: bool = True,
        residual_mlp: bool = False,
        mlp_hidden_dim: Optional[int] = None,
        mlp_layers: int = 2,
    ) -> None:
        super().__init__()
        self.normalize_input = normalize_input
        self.normalize = normalize
        self.residual_mlp = residual_mlp
        self.fc = nn.Linear(feature_dim, embed_dim)
        self.mlp: Optional[RegionMLP] = None
        if residual_mlp:
            hidden = mlp_hidden_dim if mlp_hidden_dim is not None else embed_dim // 2
            self.mlp = RegionMLP(feature_dim, hidden, embed_dim, num_layers=mlp_layers)
        self.embed_dim = embed_dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier uniform as in SCAN's EncoderImagePrecomp
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        if self.mlp is not None:
            self.mlp.reset_parameters()

    def forward(self, images: ImageInputs) -> EncodedImages:
        x: Tensor = images.features
        mask: Tensor = images.region_mask
        if self.normalize_input:
            x = l2norm(x)
        x = self.fc(x) if self.mlp is None else self.fc(x) + self.mlp(x, mask)
        if self.normalize:
            x = l2norm(x)
        x = x * mask.unsqueeze(-1).to(x.dtype)
        return EncodedImages(features=x, mask=mask, boxes=images.boxes, extra=images.graph)
