"""Visual semantic reasoning over regions (VSRN): region-relation GCN layers, then a GRU over the regions.

Li et al., "Visual Semantic Reasoning for Image-Text Matching", ICCV 2019; public release
github.com/KunpengLi1994/VSRN ``777ae74`` (``model.py`` ``EncoderImagePrecompAttn``, ``GCN_lib/Rs_GCN.py``;
read, not copied). The image is one vector, the GRU's last hidden state over its reasoned regions, so a
:class:`~kgitm.matchers.global_embedding.GlobalEmbeddingMatcher` scores it by a dot product.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from kgitm.core.batch import ImageInputs
from kgitm.core.functional import l2norm
from kgitm.core.types import EncodedImages

__all__ = ["RegionRelationGCN", "VSRNImageEncoder"]


def _masked_bn(bn: nn.BatchNorm1d, x: Tensor, mask: Tensor) -> Tensor:
    """``bn`` over the channels of the valid positions of ``x (B, R, C)``; padding stays zero."""
    out = x.new_zeros(x.shape)
    out[mask] = bn(x[mask])
    return out


class RegionRelationGCN(nn.Module):
    r"""One residual region-relation layer of VSRN (the release's ``Rs_GCN``): a fully connected graph
    whose edge weights are the dot products of two projections of the regions, divided by the number of
    regions (no softmax),

    .. math::
        R = \frac{1}{n} (W_\theta V)(W_\phi V)^\top,\qquad V^* = \mathrm{BN}(W_r R\, (W_g V)) + V.

    The projections are 1x1 convolutions (``g``, ``theta``, ``phi``, ``W.0``; ``W.1`` the batch norm), the
    release's names and shapes ``(C_out, C_in, 1)``. Padded regions (``mask`` false) are neither keys nor
    counted in ``n``, and the batch norm's statistics in training count valid regions only (the release has
    no padding: 36 regions per image).

    Args:
        dim: region size ``D``.
        inter_dim: size of the projections (default ``None``: ``D``, the release's ``inter_channels=embed_size``).

    Shapes:
        regions ``(B, R, D)``, mask ``(B, R)`` -> ``(B, R, D)``, zeros at padding.
    """

    def __init__(self, dim: int, inter_dim: int | None = None) -> None:
        super().__init__()
        inter = inter_dim or dim
        self.g = nn.Conv1d(dim, inter, 1)
        self.theta = nn.Conv1d(dim, inter, 1)
        self.phi = nn.Conv1d(dim, inter, 1)
        self.W = nn.Sequential(nn.Conv1d(inter, dim, 1), nn.BatchNorm1d(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the release: PyTorch's default initialisation, the residual branch's batch norm zeroed
        for conv in (self.g, self.theta, self.phi, self.W[0]):
            conv.reset_parameters()
        self.W[1].reset_parameters()
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    @staticmethod
    def _project(conv: nn.Conv1d, x: Tensor) -> Tensor:
        return torch.nn.functional.linear(x, conv.weight.squeeze(-1), conv.bias)

    def forward(self, regions: Tensor, mask: Tensor) -> Tensor:
        valid = mask.unsqueeze(-1).to(regions.dtype)
        g = self._project(self.g, regions) * valid
        theta = self._project(self.theta, regions)
        phi = self._project(self.phi, regions) * valid
        count = mask.sum(1).clamp_min(1).to(regions.dtype).view(-1, 1, 1)
        relation = theta @ phi.transpose(1, 2) / count  # (B, R, R)
        y = self._project(self.W[0], relation @ g)
        return (_masked_bn(self.W[1], y, mask) + regions) * valid


class VSRNImageEncoder(nn.Module):
    r"""VSRN's image encoder: projected regions, ``num_layers`` :class:`RegionRelationGCN` layers, and a
    GRU over the reasoned regions whose last hidden state is the image (Li et al., ICCV 2019; release
    ``model.py`` ``EncoderImagePrecompAttn``).

    .. math::
        V_0 = \mathrm{n}(W x + b),\quad V_{k} = \mathrm{GCN}_k(V_{k-1}),\quad
        v = \mathrm{l2}(\mathrm{BN}(\mathrm{GRU}(\mathrm{n}'(V_K))_{\text{last}}))

    **The normalisation axis is the release's.** Its ``l2norm`` sums over ``dim=1``, which for ``(B, R, D)``
    regions is the *region* axis: each feature dimension is normalised over an image's regions, not each
    region over its features. ``norm_axis="regions"`` (the default) computes that; ``"features"`` the
    per-region l2 the paper describes. :math:`\mathrm{n}` (after the projection) is applied only with
    ``normalize_projection`` (the release: every dataset but ``f30k_precomp``), :math:`\mathrm{n}'` (after
    the GCN) always; the batch norm only with ``final_batch_norm`` (the release: ``f30k_precomp`` only).

    Args:
        feature_dim: input feature size ``D_in`` (linked from the data module).
        embed_dim: joint embedding size ``D`` (the release's default 2048).
        num_layers: GCN layers (default 4, the release's ``Rs_GCN_1..4``).
        normalize_projection: l2-normalise the projected regions along ``norm_axis`` (default True).
        norm_axis: ``"regions"`` (the release's ``l2norm`` over ``dim=1``) or ``"features"`` (default ``"regions"``).
        final_batch_norm: batch-normalise the GRU state (default False).
        normalize: l2-normalise the image vector (default True; the release's ``--no_imgnorm`` turns it off).

    Shapes:
        input: :class:`~kgitm.core.batch.ImageInputs` with ``features (B, R, D_in)``, ``region_mask (B, R)``
        (valid regions first).
        output: :class:`~kgitm.core.types.EncodedImages` with ``features (B, 1, D)``, one vector per image.
    """

    def __init__(
        self,
        feature_dim: int,
        embed_dim: int = 2048,
        *,
        num_layers: int = 4,
        normalize_projection: bool = True,
        norm_axis: Literal["regions", "features"] = "regions",
        final_batch_norm: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if norm_axis not in ("regions", "features"):
            raise ValueError(f"VSRNImageEncoder: norm_axis must be 'regions' or 'features', got {norm_axis!r}")
        self.fc = nn.Linear(feature_dim, embed_dim)
        self.gcn = nn.ModuleList(RegionRelationGCN(embed_dim) for _ in range(num_layers))
        self.gru = nn.GRU(embed_dim, embed_dim, 1, batch_first=True)
        self.bn = nn.BatchNorm1d(embed_dim) if final_batch_norm else None
        self.normalize_projection = normalize_projection
        self.norm_axis = norm_axis
        self.normalize = normalize
        self.embed_dim = embed_dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the release: Xavier-uniform fc, zero bias; PyTorch's defaults elsewhere
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        for layer in self.gcn:
            layer.reset_parameters()
        self.gru.reset_parameters()
        if self.bn is not None:
            self.bn.reset_parameters()

    def _norm(self, x: Tensor) -> Tensor:
        return l2norm(x, dim=1 if self.norm_axis == "regions" else -1)  # padding is zero: it adds nothing to a norm

    def forward(self, images: ImageInputs) -> EncodedImages:
        mask = images.region_mask
        valid = mask.unsqueeze(-1).to(images.features.dtype)
        x = self.fc(images.features) * valid
        if self.normalize_projection:
            x = self._norm(x)
        for layer in self.gcn:
            x = layer(x, mask)
        x = self._norm(x)
        lengths = mask.sum(1).clamp_min(1)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, hidden = self.gru(packed)
        v = hidden[-1]  # (B, D): the state after the last valid region
        if self.bn is not None:
            v = self.bn(v)
        if self.normalize:
            v = l2norm(v)
        one = torch.ones(v.shape[0], 1, dtype=torch.bool, device=v.device)
        return EncodedImages(features=v.unsqueeze(1), mask=one, boxes=None, extra=images.graph)
