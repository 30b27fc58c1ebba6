"""Visual graphs over detected regions: fully connected or k-nearest-neighbour box graphs.

The visual graph of GSMN (Liu et al., CVPR 2020, "Graph Structured Network for Image-Text
Matching"): one node per region, edges between regions, and for every edge the polar
pseudo-coordinates ``(rho, theta)`` of the two box centres
(:func:`kgitm.core.geometry.polar_pseudo_coordinates`), which a MoNet-style convolution weights
with Gaussian kernels. GSMN uses the fully connected graph; ``mode="knn"`` keeps, for each region,
only its ``k`` nearest regions (by centre distance), a sparser graph for large ``R``.

Edge convention (PyG's): ``edge_index[0]`` is the source ``j``, ``edge_index[1]`` the target ``i``
(messages flow ``j -> i``), and the edge attribute is the position of the source relative to the
target, ``polar(c_j - c_i)``, as in PyG's ``Cartesian``/``Polar`` transforms. Padded regions
(``valid_mask`` False) stay as isolated nodes so node ``r`` is always region ``r``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from kgitm.core.geometry import polar_pseudo_coordinates

BoxGraphMode = Literal["full", "knn"]


def box_centres(boxes: Tensor) -> Tensor:
    """Centres of corner boxes.

    Shapes:
        boxes: ``(..., 4)`` corners ``x1, y1, x2, y2``. Output: ``(..., 2)``.
    """
    return torch.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], dim=-1)


def box_adjacency(
    boxes: Tensor,
    *,
    mode: BoxGraphMode = "full",
    k: int = 8,
    valid_mask: Tensor | None = None,
) -> Tensor:
    """Dense adjacency of the box graphs of a batch of images, vectorised over the batch.

    Args:
        boxes: normalised corner boxes (see :func:`kgitm.core.geometry.normalize_boxes`).
        mode: ``"full"`` (every ordered pair of distinct valid regions, GSMN) or ``"knn"`` (each
            region receives edges from its ``k`` nearest valid regions). Default ``"full"``.
        k: neighbours per region for ``mode="knn"`` (clamped to the number of valid regions - 1).
            Default 8.
        valid_mask: which regions are real (False for zero padding); ``None`` means all.

    Returns:
        ``adj[n, i, j]`` True when there is an edge from source ``j`` to target ``i``. No self loops;
        padded regions have no edges.

    Shapes:
        boxes: ``(N, R, 4)``; valid_mask: ``(N, R)``. Output: ``(N, R, R)`` bool.
    """
    if boxes.dim() != 3 or boxes.size(-1) != 4:
        raise ValueError(f"boxes must have shape (N, R, 4), got {tuple(boxes.shape)}")
    n, r, _ = boxes.shape
    if valid_mask is None:
        valid_mask = torch.ones(n, r, dtype=torch.bool, device=boxes.device)
    valid_mask = valid_mask.to(torch.bool)
    if valid_mask.shape != (n, r):
        raise ValueError(f"valid_mask must have shape {(n, r)}, got {tuple(valid_mask.shape)}")
    eye = torch.eye(r, dtype=torch.bool, device=boxes.device)
    pair_ok = valid_mask.unsqueeze(2) & valid_mask.unsqueeze(1) & ~eye  # [n, i, j]
    if mode == "full":
        return pair_ok
    if mode != "knn":
        raise ValueError(f"mode must be 'full' or 'knn', got {mode!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1 for mode='knn', got {k}")
    centre = box_centres(boxes)
    dist = torch.cdist(centre.float(), centre.float())  # [n, i, j]
    dist = dist.masked_fill(~pair_ok, float("inf"))
    kk = min(k, max(r - 1, 0))
    if kk == 0:
        return torch.zeros(n, r, r, dtype=torch.bool, device=boxes.device)
    # stable tie-break by index: sort is stable, topk is not guaranteed to be
    order = torch.sort(dist, dim=-1, stable=True).indices[..., :kk]
    adj = torch.zeros(n, r, r, dtype=torch.bool, device=boxes.device)
    adj.scatter_(-1, order, True)
    return adj & pair_ok  # drops the +inf picks of images with fewer than k + 1 valid regions


def _edges_from_adjacency(boxes: Tensor, adj: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Batch-global ``edge_index``, ``edge_attr`` and graph id of every edge from a dense adjacency."""
    n, r, _ = adj.shape
    pseudo = polar_pseudo_coordinates(boxes)  # [n, i, j] = polar(c_j - c_i)
    g, tgt, src = adj.nonzero(as_tuple=True)
    edge_index = torch.stack([src + g * r, tgt + g * r], dim=0)
    return edge_index, pseudo[g, tgt, src], g


def box_graph(
    boxes: Tensor,
    *,
    mode: BoxGraphMode = "full",
    k: int = 8,
    valid_mask: Tensor | None = None,
) -> Data:
    """The box graph of one image as a PyG ``Data``.

    Args:
        boxes: normalised corner boxes of the image's regions.
        mode: ``"full"`` or ``"knn"`` (see :func:`box_adjacency`). Default ``"full"``.
        k: neighbours per region for ``"knn"``. Default 8.
        valid_mask: False for padded regions (kept as isolated nodes); ``None`` means all valid.

    Returns:
        ``Data(edge_index, edge_attr, pos, num_nodes=R)``: ``edge_attr`` holds ``(rho, theta)`` of the
        source centre relative to the target centre; ``pos`` the box centres.

    Shapes:
        boxes: ``(R, 4)``; valid_mask: ``(R,)``. edge_index: ``(2, E)``; edge_attr: ``(E, 2)``;
        pos: ``(R, 2)``. ``E = V (V - 1)`` for ``"full"`` and ``V min(k, V - 1)`` for ``"knn"``,
        ``V`` valid regions.
    """
    if boxes.dim() != 2 or boxes.size(-1) != 4:
        raise ValueError(f"boxes must have shape (R, 4), got {tuple(boxes.shape)}")
    mask = None if valid_mask is None else valid_mask.unsqueeze(0)
    adj = box_adjacency(boxes.unsqueeze(0), mode=mode, k=k, valid_mask=mask)
    edge_index, edge_attr, _ = _edges_from_adjacency(boxes.unsqueeze(0), adj)
    return Data(edge_index=edge_index, edge_attr=edge_attr, pos=box_centres(boxes), num_nodes=boxes.size(0))


def box_graph_batch(
    boxes: Tensor,
    *,
    mode: BoxGraphMode = "full",
    k: int = 8,
    valid_mask: Tensor | None = None,
) -> Batch:
    """Box graphs of a batch of images, computed in one vectorised pass, as a PyG ``Batch``.

    Equal to ``Batch.from_data_list([box_graph(boxes[n], ...) for n in range(N)])``; node
    ``n * R + r`` is region ``r`` of image ``n``.

    Args:
        boxes: normalised corner boxes.
        mode: ``"full"`` or ``"knn"``. Default ``"full"``.
        k: neighbours per region for ``"knn"``. Default 8.
        valid_mask: False for padded regions; ``None`` means all valid.

    Shapes:
        boxes: ``(N, R, 4)``; valid_mask: ``(N, R)``. Output ``Batch`` with ``N * R`` nodes.
    """
    adj = box_adjacency(boxes, mode=mode, k=k, valid_mask=valid_mask)
    edge_index, edge_attr, g = _edges_from_adjacency(boxes, adj)
    n, r, _ = boxes.shape
    counts = torch.bincount(g, minlength=n).tolist()
    pos = box_centres(boxes)
    data_list = []
    for i, (ei, ea) in enumerate(zip(edge_index.split(counts, dim=1), edge_attr.split(counts, dim=0))):
        data_list.append(Data(edge_index=ei - i * r, edge_attr=ea, pos=pos[i], num_nodes=r))
    return Batch.from_data_list(data_list)
